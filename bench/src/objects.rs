//! `flotilla-bench objects`: load on Flotilla's object API (creates, gets,
//! lists, a fixed-rate run and watch delivery), or the same JSON bytes as raw
//! etcd puts, ranges and watches, so that the object API's overhead over a
//! plain key-value write can be read off side by side.
//!
//! Every measured point prints one JSON line on stdout (tagged with the
//! system); `objects-report` turns the lines of both systems into markdown
//! tables. Failures are counted, never fatal, and every loop is bounded by a
//! deadline.

use flotilla_proto::prefix_end;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use flotilla_client::{Client, ClientOptions, EventType, ListParams, WatchParams};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::watch_client::WatchClient;
use flotilla_proto::etcdserverpb::{
    watch_request, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
};
use futures::StreamExt;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tonic::transport::Channel;

use crate::{endpoint, json_string, status_text, unix_ns, Tally};

/// Annotation carrying the writer's wall clock (ns since the epoch).
const SENT_ANNOTATION: &str = "bench.flotilla.io/sent-unix-ns";
/// Annotation carrying the writer's sequence number.
const SEQ_ANNOTATION: &str = "bench.flotilla.io/seq";

use flotilla_testkit::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// Closed-loop creates of unique pods at each --clients.
    Create,
    /// Closed-loop single-object gets (linearizable, then serializable).
    Get,
    /// Closed-loop lists of a namespace of --objects pods (all, then a label
    /// selector matching --selected-percent).
    List,
    /// Open-loop creates at --rate per second.
    Rate,
    /// Delivery latency to --watchers watchers.
    Watch,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ObjectsArgs {
    /// System under test: Flotilla's object API (flotilla_client::Client),
    /// or etcd's v3 KV/Watch API with the same JSON bytes as values.
    #[arg(long, value_enum, default_value_t = Target::Flotilla)]
    target: Target,
    /// Phases to run, in this order (comma separated). get and list first
    /// write --objects pods into a namespace of their own.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "create,get,list,rate,watch"
    )]
    phases: Vec<Phase>,
    /// Concurrent clients of the create and get points.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    clients: Vec<usize>,
    /// Concurrent clients of the list points.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    list_clients: Vec<usize>,
    /// Seconds of each closed-loop point.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Pods in the namespace that gets and lists read.
    #[arg(long, default_value_t = 1000)]
    objects: usize,
    /// Percentage of those pods the list's label selector matches.
    #[arg(long, default_value_t = 10)]
    selected_percent: usize,
    /// Creates per second of the fixed-rate point.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of the fixed-rate point.
    #[arg(long, default_value_t = 10.0)]
    rate_secs: f64,
    /// Concurrent watchers (spread round-robin over the endpoints).
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Watch streams per connection.
    #[arg(long, default_value_t = 50)]
    streams_per_conn: usize,
    /// Writes per second during the watch point (creates, alternating with
    /// updates of the latest pod whose create was acknowledged).
    #[arg(long, default_value_t = 50.0)]
    watch_rate: f64,
    /// Seconds the watch writer runs.
    #[arg(long, default_value_t = 10.0)]
    watch_secs: f64,
    /// After the writer stops, how long watchers may take to catch up.
    #[arg(long, default_value_t = 15.0)]
    watch_drain_secs: f64,
    /// Deadline of each request, in milliseconds (an expired request counts
    /// as an error).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Prefix of the namespaces used (default: derived from the clock, so
    /// that runs against the same cluster do not collide).
    #[arg(long)]
    run_id: Option<String>,
    /// Seed of the random choice of objects to get.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

// ---------------------------------------------------------------------------
// Connections

#[derive(Clone)]
enum Conn {
    Flotilla(Client),
    Etcd(KvClient<Channel>),
}

/// Connections per endpoint; worker i uses endpoint i % E.
struct Pool {
    conns: Vec<Vec<Conn>>,
}

impl Pool {
    fn pick(&self, i: usize) -> Conn {
        let n = self.conns.len();
        let per = &self.conns[i % n];
        per[(i / n) % per.len()].clone()
    }
    fn total(&self) -> usize {
        self.conns.iter().map(Vec::len).sum()
    }
}

/// A client of all `endpoints` (setup and checks).
fn connect_all(endpoints: &[String]) -> Result<Client> {
    Client::connect_with(
        endpoints,
        ClientOptions {
            tls: crate::tls(),
            ..Default::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

fn flotilla_client(ep: &str, request_timeout: Duration) -> Result<Client> {
    Client::connect_with(
        &[ep.to_string()],
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout,
            // One master per client: the benchmark spreads load itself.
            // One attempt per request, as the raw etcd client makes: a
            // request that fails counts as an error on both sides.
            retry_for: Duration::ZERO,
            tls: crate::tls(),
            ..Default::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("client of {ep}: {e}"))
}

async fn etcd_channel(ep: &str) -> Result<Channel> {
    endpoint(ep, Duration::from_secs(5))?
        .connect()
        .await
        .with_context(|| format!("connecting to {ep}"))
}

async fn make_pool(
    target: Target,
    endpoints: &[String],
    per_ep: usize,
    timeout: Duration,
) -> Result<Pool> {
    let mut conns = Vec::new();
    for ep in endpoints {
        let mut v = Vec::new();
        for _ in 0..per_ep.max(1) {
            v.push(match target {
                Target::Flotilla => Conn::Flotilla(flotilla_client(ep, timeout)?),
                Target::Etcd => Conn::Etcd(KvClient::new(etcd_channel(ep).await?)),
            });
        }
        conns.push(v);
    }
    let pool = Pool { conns };
    // Open every connection before measuring anything.
    let warm = pool.conns.iter().flatten().map(|c| async move {
        match c {
            Conn::Flotilla(c) => c
                .get_with("namespaces", "", "default", true)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Conn::Etcd(kv) => {
                let mut kv = kv.clone();
                kv.range(RangeRequest {
                    key: b"warm-up".to_vec(),
                    serializable: true,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|s| status_text(&s))
            }
        }
    });
    for r in futures::future::join_all(warm).await {
        if let Err(e) = r {
            // A missing "default" namespace still proves the connection.
            if !e.contains("not found") && !e.contains("NotFound") {
                eprintln!("flotilla-bench: warm-up: {e}");
            }
        }
    }
    Ok(pool)
}

// ---------------------------------------------------------------------------
// Objects

/// A realistic small pod (about 1 KiB of JSON).
fn pod(ns: &str, name: &str, selected: bool, annotations: &[(&str, String)]) -> Value {
    let mut ann = serde_json::Map::new();
    ann.insert(
        "kubernetes.io/change-cause".into(),
        json!("kubectl apply --filename=deploy/web.yaml --record=true"),
    );
    for (k, v) in annotations {
        ann.insert((*k).to_string(), json!(v));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {
                "app": "web",
                "tier": if selected { "selected" } else { "other" },
                "pod-template-hash": "5d8f7c9b6d",
                "release": "stable"
            },
            "annotations": ann
        },
        "spec": {
            // No master runs this scheduler: the object API's figures are
            // the benchmark's writes alone (the scheduler would mark every
            // pod unschedulable, there being no nodes).
            "schedulerName": "flotilla-bench-none",
            "containers": [{
                "name": "web",
                "image": "registry.example.com/team/web:1.27.3",
                "args": ["--listen=:8080", "--config=/etc/web/config.yaml"],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": [
                    {"name": "LOG_LEVEL", "value": "info"},
                    {"name": "CACHE_SIZE_MB", "value": "256"}
                ],
                "resources": {
                    "requests": {"cpu": "100m", "memory": "128Mi"},
                    "limits": {"cpu": "500m", "memory": "256Mi"}
                },
                "readinessProbe": {
                    "httpGet": {"path": "/healthz", "port": 8080},
                    "initialDelaySeconds": 2,
                    "periodSeconds": 5
                },
                "volumeMounts": [{"name": "config", "mountPath": "/etc/web", "readOnly": true}]
            }],
            "volumes": [{"name": "config", "configMap": {"name": "web-config"}}],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "nodeSelector": {"pool": "general"}
        }
    })
}

/// Where the pods of `ns` would be stored by Flotilla (etcd gets the same
/// keys).
fn etcd_prefix(ns: &str) -> String {
    flotilla_testkit::kind_prefix("pods", ns)
}

fn etcd_key(ns: &str, name: &str) -> Vec<u8> {
    flotilla_testkit::object_key("pods", ns, name).into_bytes()
}

/// Create a pod (or put its JSON under its etcd key).
async fn create(conn: &Conn, ns: &str, obj: &Value) -> Result<(), String> {
    match conn {
        Conn::Flotilla(c) => c
            .create("pods", ns, obj, false)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Conn::Etcd(kv) => {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let mut kv = kv.clone();
            kv.put(PutRequest {
                key: etcd_key(ns, name),
                value: serde_json::to_vec(obj).unwrap_or_default(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|s| status_text(&s))
        }
    }
}

async fn with_timeout<F>(timeout: Duration, f: F) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), String>>,
{
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(format!("deadline of {timeout:?} exceeded")),
    }
}

async fn ensure_namespace(target: Target, endpoints: &[String], ns: &str) -> Result<()> {
    if target == Target::Etcd {
        return Ok(());
    }
    let c = connect_all(endpoints)?;
    let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match c.create("namespaces", "", &obj, false).await {
            Ok(_) => return Ok(()),
            Err(e) if e.to_string().contains("already exists") => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("flotilla-bench: creating namespace {ns}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => bail!("creating namespace {ns}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Output

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// One JSON line for a closed-loop or fixed-rate point.
fn point_json(
    system: &str,
    workload: &str,
    extra: &[(&str, String)],
    t: &Tally,
    secs: f64,
) -> String {
    let mut s = format!("{{\"system\":\"{system}\",\"workload\":\"{workload}\"");
    for (k, v) in extra {
        let _ = write!(s, ",\"{k}\":{v}");
    }
    let thr = if secs > 0.0 { t.ops as f64 / secs } else { 0.0 };
    let q = |x: f64| {
        if t.ops > 0 {
            ms(t.hist.value_at_quantile(x))
        } else {
            "null".into()
        }
    };
    let _ = write!(
        s,
        ",\"ops\":{},\"seconds\":{secs:.3},\"throughput\":{thr:.1},\"p50_ms\":{},\"p99_ms\":{},\"max_ms\":{},\"errors\":{}",
        t.ops,
        q(0.5),
        q(0.99),
        if t.ops > 0 { ms(t.hist.max()) } else { "null".into() },
        t.errors
    );
    if let Some(e) = &t.first_error {
        let _ = write!(s, ",\"first_error\":{}", json_string(e));
    }
    s.push('}');
    s
}

// ---------------------------------------------------------------------------
// Closed-loop points

#[derive(Clone)]
enum Work {
    Create {
        ns: String,
        prefix: String,
    },
    Get {
        ns: String,
        names: Arc<Vec<String>>,
        serializable: bool,
    },
    List {
        ns: String,
        selector: String,
    },
}

/// One request of `work`; returns the number of items for lists.
async fn one(
    conn: &Conn,
    work: &Work,
    worker: usize,
    seq: u64,
    rng: &mut StdRng,
) -> Result<usize, String> {
    match work {
        Work::Create { ns, prefix } => {
            let obj = pod(ns, &format!("{prefix}-{worker}-{seq}"), false, &[]);
            create(conn, ns, &obj).await.map(|_| 1)
        }
        Work::Get {
            ns,
            names,
            serializable,
        } => {
            let name = &names[rng.gen_range(0..names.len())];
            match conn {
                Conn::Flotilla(c) => c
                    .get_with("pods", ns, name, *serializable)
                    .await
                    .map(|_| 1)
                    .map_err(|e| e.to_string()),
                Conn::Etcd(kv) => {
                    let mut kv = kv.clone();
                    let r = kv
                        .range(RangeRequest {
                            key: etcd_key(ns, name),
                            serializable: *serializable,
                            ..Default::default()
                        })
                        .await
                        .map_err(|s| status_text(&s))?
                        .into_inner();
                    // Decode the value, as the Flotilla client decodes its answer.
                    let kv = r.kvs.first().ok_or_else(|| format!("{name}: not found"))?;
                    serde_json::from_slice::<Value>(&kv.value).map_err(|e| e.to_string())?;
                    Ok(1)
                }
            }
        }
        Work::List { ns, selector } => match conn {
            Conn::Flotilla(c) => c
                .list("pods", ns, &ListParams::default().labels(selector))
                .await
                .map(|l| l.items.len())
                .map_err(|e| e.to_string()),
            Conn::Etcd(kv) => {
                let mut kv = kv.clone();
                let p = etcd_prefix(ns).into_bytes();
                let r = kv
                    .range(RangeRequest {
                        range_end: prefix_end(&p),
                        key: p,
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| status_text(&s))?
                    .into_inner();
                // Decode every value into a list, as the Flotilla client
                // returns its items (all held, then dropped together; each
                // dropped as soon as decoded cost the load generator's
                // allocator far less, which ranked the two systems' lists
                // by the client's work).
                let items = r
                    .kvs
                    .iter()
                    .map(|kv| serde_json::from_slice::<Value>(&kv.value))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                Ok(items.len())
            }
        },
    }
}

struct Closed {
    tally: Tally,
    secs: f64,
    /// Items returned by the first successful request.
    items: Option<usize>,
}

async fn closed_loop(
    pool: &Pool,
    clients: usize,
    secs: f64,
    timeout: Duration,
    work: Work,
    seed: u64,
) -> Closed {
    let start = Instant::now();
    let deadline = start + crate::secs_f64(secs);
    let mut handles = Vec::with_capacity(clients);
    for i in 0..clients {
        let conn = pool.pick(i);
        let work = work.clone();
        handles.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            let mut items = None;
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
            let mut seq = 0u64;
            while Instant::now() < deadline {
                seq += 1;
                let t0 = Instant::now();
                let r = match tokio::time::timeout(timeout, one(&conn, &work, i, seq, &mut rng))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(format!("deadline of {timeout:?} exceeded")),
                };
                match r {
                    Ok(n) => {
                        tally
                            .hist
                            .saturating_record(t0.elapsed().as_micros().max(1) as u64);
                        tally.ops += 1;
                        items.get_or_insert(n);
                    }
                    Err(e) => {
                        tally.error(e);
                        if t0.elapsed() < Duration::from_millis(1) {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
            }
            (tally, items)
        }));
    }
    let mut tally = Tally::new();
    let mut items = None;
    for h in handles {
        match h.await {
            Ok((t, n)) => {
                tally.merge(t);
                if items.is_none() {
                    items = n;
                }
            }
            Err(e) => tally.error(format!("client task failed: {e}")),
        }
    }
    Closed {
        tally,
        secs: start.elapsed().as_secs_f64(),
        items,
    }
}

/// Write `n` pods named p-00000... into `ns`; every 100/pct-th one carries
/// the selected label. etcd gets them as Flotilla serves them.
async fn populate(
    pool: &Pool,
    ns: &str,
    n: usize,
    pct: usize,
    timeout: Duration,
) -> Result<Vec<String>> {
    let names: Vec<String> = (0..n).map(|i| format!("p-{i:05}")).collect();
    let every = if pct == 0 {
        usize::MAX
    } else {
        (100 / pct.min(100)).max(1)
    };
    let pods: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| pod(ns, name, i.is_multiple_of(every), &[]))
        .collect();
    // etcd gets the pods as Flotilla's API server serves them (see
    // crate::stored), so that both systems' gets and lists return the same
    // bytes.
    let pods = Arc::new(match pool.pick(0) {
        Conn::Etcd(_) => crate::stored::as_served(ns, &pods).await?,
        Conn::Flotilla(_) => pods,
    });
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = 32.min(n.max(1));
    let mut handles = Vec::new();
    for w in 0..workers {
        let conn = pool.pick(w);
        let next = next.clone();
        let names = names.clone();
        let pods = pods.clone();
        let ns = ns.to_string();
        handles.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= names.len() {
                    break;
                }
                let obj = &pods[i];
                let mut tries = 0;
                loop {
                    tries += 1;
                    match with_timeout(timeout, create(&conn, &ns, obj)).await {
                        Ok(()) => break,
                        Err(e) if e.contains("already exists") => break,
                        Err(e) if tries < 5 => {
                            let _ = e;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(e) => {
                            errors.push(format!("{}: {e}", names[i]));
                            break;
                        }
                    }
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for h in handles {
        errors.extend(h.await.unwrap_or_else(|e| vec![e.to_string()]));
    }
    if !errors.is_empty() {
        bail!(
            "populating {ns}: {} creates failed, first: {}",
            errors.len(),
            errors[0]
        );
    }
    Ok(names)
}

// ---------------------------------------------------------------------------
// Fixed rate (open loop)

async fn fixed_rate(
    pool: &Pool,
    ns: &str,
    rate: f64,
    secs: f64,
    timeout: Duration,
) -> (Tally, f64, u64, u64) {
    let n = (rate * secs).round().max(1.0) as u64;
    let start = Instant::now() + Duration::from_millis(50);
    let mut set = tokio::task::JoinSet::new();
    let mut tally = Tally::new();
    let mut max_lag_us = 0u64;
    let absorb =
        |tally: &mut Tally, r: Result<(Result<(), String>, u64), tokio::task::JoinError>| match r {
            Ok((Ok(()), us)) => {
                tally.hist.saturating_record(us.max(1));
                tally.ops += 1;
            }
            Ok((Err(e), _)) => tally.error(e),
            Err(e) => tally.error(format!("task failed: {e}")),
        };
    for i in 0..n {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at.into()).await;
        max_lag_us = max_lag_us.max(at.elapsed().as_micros() as u64);
        let conn = pool.pick(i as usize);
        let ns = ns.to_string();
        set.spawn(async move {
            let obj = pod(&ns, &format!("r-{i}"), false, &[]);
            let r = with_timeout(timeout, create(&conn, &ns, &obj)).await;
            // From the scheduled time, not the send time: no coordinated omission.
            (r, at.elapsed().as_micros() as u64)
        });
        while let Some(r) = set.try_join_next() {
            absorb(&mut tally, r);
        }
    }
    while let Some(r) = set.join_next().await {
        absorb(&mut tally, r);
    }
    let secs = start.elapsed().as_secs_f64();
    (tally, secs, n, max_lag_us)
}

// ---------------------------------------------------------------------------
// Watch delivery

struct WatcherResult {
    hist: Histogram<u64>,
    /// Microseconds from the writer's acknowledgement of a write to its
    /// delivery (0 when delivered before the writer had the answer).
    after_ack: Histogram<u64>,
    /// seq -> delivered at least once.
    seen: Vec<bool>,
    events: u64,
    duplicates: u64,
    error: Option<String>,
}

/// What the writer reports once it has stopped.
#[derive(Clone)]
struct WriterDone {
    acked: Arc<Vec<bool>>,
    acked_count: usize,
    drain_deadline: Instant,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// (seq, sent-unix-ns) from an object's annotations.
fn stamp(obj: &Value) -> Option<(usize, u128)> {
    let ann = obj.pointer("/metadata/annotations")?;
    let seq = ann.get(SEQ_ANNOTATION)?.as_str()?.parse().ok()?;
    let sent = ann.get(SENT_ANNOTATION)?.as_str()?.parse().ok()?;
    Some((seq, sent))
}

enum Watching {
    Flotilla(flotilla_client::client::WatchStream),
    Etcd(Box<tonic::Streaming<flotilla_proto::etcdserverpb::WatchResponse>>),
}

/// Open one watch on `ns` from after `rev`.
async fn open_watch(
    target: Target,
    conn: &WatchConn,
    ns: &str,
    rev: i64,
) -> Result<Watching, String> {
    match (target, conn) {
        (Target::Flotilla, WatchConn::Flotilla(c)) => c
            .watch(
                "pods",
                ns,
                &WatchParams {
                    resource_version: rev.to_string(),
                    ..Default::default()
                },
            )
            .await
            .map(Watching::Flotilla)
            .map_err(|e| e.to_string()),
        (_, WatchConn::Etcd(ch)) => {
            let p = etcd_prefix(ns).into_bytes();
            let req = WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(
                    WatchCreateRequest {
                        range_end: prefix_end(&p),
                        key: p,
                        start_revision: rev + 1,
                        ..Default::default()
                    },
                )),
            };
            // Keep the request side open for the life of the watch.
            let reqs = futures::stream::iter(vec![req]).chain(futures::stream::pending());
            let mut w = WatchClient::new(ch.clone());
            let mut s = w
                .watch(reqs)
                .await
                .map_err(|s| status_text(&s))?
                .into_inner();
            // The first answer confirms the watch exists.
            match s.next().await {
                Some(Ok(r)) if r.created && !r.canceled => Ok(Watching::Etcd(Box::new(s))),
                Some(Ok(r)) => Err(format!("watch not created: {}", r.cancel_reason)),
                Some(Err(st)) => Err(status_text(&st)),
                None => Err("watch stream ended before it was created".into()),
            }
        }
        _ => Err("connection does not match the target".into()),
    }
}

#[derive(Clone)]
enum WatchConn {
    Flotilla(Client),
    Etcd(Channel),
}

async fn watcher(
    target: Target,
    conn: WatchConn,
    ns: String,
    rev: i64,
    ready: tokio::sync::mpsc::UnboundedSender<Result<(), String>>,
    mut done: tokio::sync::watch::Receiver<Option<WriterDone>>,
    acks: Arc<Vec<AtomicU64>>,
) -> WatcherResult {
    let mut res = WatcherResult {
        hist: new_hist(),
        after_ack: new_hist(),
        seen: Vec::new(),
        events: 0,
        duplicates: 0,
        error: None,
    };
    let mut stream = match open_watch(target, &conn, &ns, rev).await {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            res.error = Some(e);
            return res;
        }
    };
    drop(ready);
    let mut info: Option<WriterDone> = None;
    // Acked seqs delivered so far (valid once `info` is known).
    let mut acked_seen = 0usize;
    let record = |res: &mut WatcherResult,
                  obj: &Value,
                  info: &Option<WriterDone>,
                  acked_seen: &mut usize| {
        let now = unix_ns();
        let Some((seq, sent)) = stamp(obj) else {
            return;
        };
        res.events += 1;
        if res.seen.len() <= seq {
            res.seen.resize(seq + 1, false);
        }
        if res.seen[seq] {
            res.duplicates += 1;
            return;
        }
        res.seen[seq] = true;
        let us = (now.saturating_sub(sent) / 1000) as u64;
        res.hist.saturating_record(us.max(1));
        let ack_us = acks.get(seq).map_or(0, |a| a.load(Ordering::Acquire));
        let after = if ack_us == 0 {
            0
        } else {
            ((now / 1000) as u64).saturating_sub(ack_us)
        };
        res.after_ack.saturating_record(after.max(1));
        if let Some(i) = info {
            if i.acked.get(seq).copied().unwrap_or(false) {
                *acked_seen += 1;
            }
        }
    };
    loop {
        if let Some(i) = &info {
            if acked_seen >= i.acked_count {
                break;
            }
        }
        let drain = info
            .as_ref()
            .map(|i| i.drain_deadline)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            ch = done.changed(), if info.is_none() => {
                if ch.is_err() {
                    break;
                }
                info = done.borrow().clone();
                if let Some(i) = &info {
                    acked_seen = res
                        .seen
                        .iter()
                        .enumerate()
                        .filter(|(s, v)| **v && i.acked.get(*s).copied().unwrap_or(false))
                        .count();
                }
            }
            _ = tokio::time::sleep_until(drain.into()) => break,
            ev = next_objects(&mut stream) => match ev {
                Ok(objs) => {
                    for o in &objs {
                        record(&mut res, o, &info, &mut acked_seen);
                    }
                }
                Err(e) => {
                    res.error = Some(e);
                    break;
                }
            },
        }
    }
    res
}

/// The objects of the next delivery (a Flotilla event, or an etcd response
/// with its events' values decoded as JSON, as a client would).
async fn next_objects(s: &mut Watching) -> Result<Vec<Value>, String> {
    match s {
        Watching::Flotilla(s) => match s.next().await {
            Some(Ok(ev)) => Ok(match ev.kind {
                EventType::Added | EventType::Modified => vec![ev.object],
                _ => Vec::new(),
            }),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("watch stream ended".into()),
        },
        Watching::Etcd(s) => match s.next().await {
            Some(Ok(r)) => {
                if r.canceled {
                    return Err(format!("watch canceled: {}", r.cancel_reason));
                }
                let mut out = Vec::new();
                for ev in r.events {
                    if ev.r#type != 0 {
                        continue; // DELETE
                    }
                    if let Some(kv) = ev.kv {
                        match serde_json::from_slice::<Value>(&kv.value) {
                            Ok(v) => out.push(v),
                            Err(e) => return Err(format!("decoding an event: {e}")),
                        }
                    }
                }
                Ok(out)
            }
            Some(Err(st)) => Err(status_text(&st)),
            None => Err("watch stream ended".into()),
        },
    }
}

/// The store revision now (a serializable-enough point to watch from).
async fn current_revision(target: Target, endpoints: &[String], ns: &str) -> Result<i64> {
    match target {
        Target::Flotilla => {
            let c = connect_all(endpoints)?;
            let l = c
                .list("pods", ns, &ListParams::default().limit(1))
                .await
                .map_err(|e| anyhow::anyhow!("listing {ns}: {e}"))?;
            l.resource_version
                .parse()
                .with_context(|| format!("resourceVersion {:?}", l.resource_version))
        }
        Target::Etcd => {
            let mut kv = KvClient::new(etcd_channel(&endpoints[0]).await?);
            let r = kv
                .range(RangeRequest {
                    key: b"rev".to_vec(),
                    ..Default::default()
                })
                .await
                .map_err(|s| anyhow::anyhow!(status_text(&s)))?
                .into_inner();
            Ok(r.header.map(|h| h.revision).unwrap_or(0))
        }
    }
}

async fn watch_point(
    a: &ObjectsArgs,
    endpoints: &[String],
    ns: &str,
    timeout: Duration,
) -> Result<String> {
    let target = a.target;
    let n_ep = endpoints.len();
    let per_ep_watchers = a.watchers.div_ceil(n_ep).max(1);
    let conns_per_ep = per_ep_watchers.div_ceil(a.streams_per_conn.max(1)).max(1);
    let mut wconns: Vec<Vec<WatchConn>> = Vec::new();
    for ep in endpoints {
        let mut v = Vec::new();
        for _ in 0..conns_per_ep {
            v.push(match target {
                Target::Flotilla => {
                    WatchConn::Flotilla(flotilla_client(ep, Duration::from_secs(3600))?)
                }
                Target::Etcd => WatchConn::Etcd(etcd_channel(ep).await?),
            });
        }
        wconns.push(v);
    }
    let rev = current_revision(target, endpoints, ns).await?;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let (done_tx, done_rx) = tokio::sync::watch::channel::<Option<WriterDone>>(None);
    let n = (a.watch_rate * a.watch_secs).round().max(1.0) as usize;
    // Write s's acknowledgement, in unix microseconds (0: not yet).
    let acks: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let mut handles = Vec::with_capacity(a.watchers);
    for i in 0..a.watchers {
        let per = &wconns[i % n_ep];
        let conn = per[(i / n_ep) % per.len()].clone();
        handles.push(tokio::spawn(watcher(
            target,
            conn,
            ns.to_string(),
            rev,
            ready_tx.clone(),
            done_rx.clone(),
            acks.clone(),
        )));
    }
    drop(ready_tx);
    // Every watch established (or failed) before the writer starts.
    let t_open = Instant::now();
    let mut opened = 0usize;
    let mut open_errors = 0usize;
    let mut first_open_error = None;
    let open_deadline = Instant::now() + Duration::from_secs(60);
    while opened + open_errors < a.watchers {
        match tokio::time::timeout_at(open_deadline.into(), ready_rx.recv()).await {
            Ok(Some(Ok(()))) => opened += 1,
            Ok(Some(Err(e))) => {
                open_errors += 1;
                first_open_error.get_or_insert(e);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let open_secs = t_open.elapsed().as_secs_f64();
    eprintln!(
        "flotilla-bench: {}: {opened}/{} watches open in {open_secs:.1} s",
        target.name(),
        a.watchers
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The writer: open loop at --watch-rate; even ticks create a pod, odd
    // ticks update the latest pod whose create was acknowledged (a create
    // when there is none yet).
    let writer = connect_writer(target, endpoints, timeout).await?;
    let last_created = Arc::new(std::sync::Mutex::new(None::<usize>));
    let start = Instant::now() + Duration::from_millis(20);
    let mut set = tokio::task::JoinSet::new();
    let mut updates = 0usize;
    for s in 0..n {
        let at = start + Duration::from_secs_f64(s as f64 / a.watch_rate);
        tokio::time::sleep_until(at.into()).await;
        let w = writer.clone();
        let ns = ns.to_string();
        let update_of = if s % 2 == 1 {
            *last_created.lock().unwrap_or_else(|e| e.into_inner())
        } else {
            None
        };
        updates += usize::from(update_of.is_some());
        let last = last_created.clone();
        let acks = acks.clone();
        set.spawn(async move {
            let t0 = Instant::now();
            let r = with_timeout(timeout, write_stamped(&w, &ns, s, update_of)).await;
            if r.is_ok() {
                acks[s].store((unix_ns() / 1000) as u64, Ordering::Release);
            }
            if r.is_ok() && update_of.is_none() {
                let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
                *l = Some(l.map_or(s, |p| p.max(s)));
            }
            (s, r, t0.elapsed().as_micros() as u64)
        });
    }
    let mut acked = vec![false; n];
    let mut write_tally = Tally::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((s, Ok(()), us)) => {
                acked[s] = true;
                write_tally.hist.saturating_record(us.max(1));
                write_tally.ops += 1;
            }
            Ok((_, Err(e), _)) => write_tally.error(e),
            Err(e) => write_tally.error(format!("writer task failed: {e}")),
        }
    }
    let acked_count = acked.iter().filter(|x| **x).count();
    let writes_secs = start.elapsed().as_secs_f64();
    let acked = Arc::new(acked);
    let _ = done_tx.send(Some(WriterDone {
        acked: acked.clone(),
        acked_count,
        drain_deadline: Instant::now() + crate::secs_f64(a.watch_drain_secs),
    }));

    let mut hist = new_hist();
    let mut after_ack = new_hist();
    let mut delivered = 0u64;
    let mut unacked_delivered = 0u64;
    let mut duplicates = 0u64;
    let mut events = 0u64;
    let mut incomplete = 0usize;
    let mut stream_errors = 0usize;
    let mut first_stream_error: Option<String> = None;
    for h in handles {
        let r = match h.await {
            Ok(r) => r,
            Err(e) => {
                stream_errors += 1;
                first_stream_error.get_or_insert(format!("watcher task failed: {e}"));
                continue;
            }
        };
        let _ = hist.add(&r.hist);
        let _ = after_ack.add(&r.after_ack);
        events += r.events;
        duplicates += r.duplicates;
        let mut mine = 0usize;
        for (s, v) in r.seen.iter().enumerate() {
            if *v {
                if acked.get(s).copied().unwrap_or(false) {
                    mine += 1;
                } else {
                    unacked_delivered += 1;
                }
            }
        }
        delivered += mine as u64;
        if mine < acked_count {
            incomplete += 1;
        }
        if let Some(e) = r.error {
            stream_errors += 1;
            first_stream_error.get_or_insert(e);
        }
    }
    let expected = (acked_count * a.watchers) as u64;
    let mut s = format!(
        "{{\"system\":\"{}\",\"workload\":\"watch\",\"watchers\":{},\"watches_open\":{opened},\"open_seconds\":{open_secs:.3},\"write_rate\":{},\"writes\":{n},\"updates\":{updates},\"writes_acked\":{acked_count},\"write_seconds\":{writes_secs:.3},\"write_p50_ms\":{},\"write_p99_ms\":{},\"expected\":{expected},\"delivered\":{delivered},\"missing\":{},\"incomplete_watchers\":{incomplete},\"duplicates\":{duplicates},\"unacked_delivered\":{unacked_delivered},\"events\":{events},\"p50_ms\":{},\"p99_ms\":{},\"max_ms\":{},\"after_ack_p50_ms\":{},\"after_ack_p99_ms\":{},\"stream_errors\":{stream_errors},\"open_errors\":{open_errors},\"write_errors\":{}",
        target.name(),
        a.watchers,
        a.watch_rate,
        if write_tally.ops > 0 { ms(write_tally.hist.value_at_quantile(0.5)) } else { "null".into() },
        if write_tally.ops > 0 { ms(write_tally.hist.value_at_quantile(0.99)) } else { "null".into() },
        expected.saturating_sub(delivered),
        if hist.is_empty() { "null".into() } else { ms(hist.value_at_quantile(0.5)) },
        if hist.is_empty() { "null".into() } else { ms(hist.value_at_quantile(0.99)) },
        if hist.is_empty() { "null".into() } else { ms(hist.max()) },
        if after_ack.is_empty() { "null".into() } else { ms(after_ack.value_at_quantile(0.5)) },
        if after_ack.is_empty() { "null".into() } else { ms(after_ack.value_at_quantile(0.99)) },
        write_tally.errors,
    );
    for (k, v) in [
        ("first_open_error", first_open_error),
        ("first_stream_error", first_stream_error),
        ("first_write_error", write_tally.first_error),
    ] {
        if let Some(v) = v {
            let _ = write!(s, ",\"{k}\":{}", json_string(&v));
        }
    }
    s.push('}');
    Ok(s)
}

#[derive(Clone)]
enum Writer {
    Flotilla(Client),
    Etcd(KvClient<Channel>),
}

async fn connect_writer(target: Target, endpoints: &[String], timeout: Duration) -> Result<Writer> {
    Ok(match target {
        // Writes through the first master; watchers are spread over all.
        Target::Flotilla => Writer::Flotilla(flotilla_client(&endpoints[0], timeout)?),
        Target::Etcd => Writer::Etcd(KvClient::new(etcd_channel(&endpoints[0]).await?)),
    })
}

/// Write number `s`: create pod w-s, or update pod w-`update_of`; the
/// annotations carry `s` and the wall clock just before sending.
async fn write_stamped(
    w: &Writer,
    ns: &str,
    s: usize,
    update_of: Option<usize>,
) -> Result<(), String> {
    let name = format!("w-{}", update_of.unwrap_or(s));
    let ann = |now: u128| {
        vec![
            (SEQ_ANNOTATION, s.to_string()),
            (SENT_ANNOTATION, now.to_string()),
        ]
    };
    match w {
        Writer::Flotilla(c) => match update_of {
            None => {
                let obj = pod(ns, &name, false, &ann(unix_ns()));
                c.create("pods", ns, &obj, false)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Some(_) => {
                let patch = json!({"metadata": {"annotations": {
                    SEQ_ANNOTATION: s.to_string(), SENT_ANNOTATION: unix_ns().to_string()}}});
                c.patch("pods", ns, &name, &patch, false)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        },
        Writer::Etcd(kv) => {
            // etcd has no patch: an update puts the whole object again.
            let obj = pod(ns, &name, false, &ann(unix_ns()));
            let mut kv = kv.clone();
            kv.put(PutRequest {
                key: etcd_key(ns, &name),
                value: serde_json::to_vec(&obj).unwrap_or_default(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|st| status_text(&st))
        }
    }
}

// ---------------------------------------------------------------------------
// The command

pub async fn run(endpoints: &[String], max_conns: usize, a: &ObjectsArgs) -> Result<()> {
    if a.clients.iter().chain(&a.list_clients).any(|c| *c == 0) {
        bail!("client counts must be at least 1");
    }
    if a.rate <= 0.0 || a.watch_rate <= 0.0 {
        bail!("rates must be positive");
    }
    let system = a.target.name();
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let run_id = a
        .run_id
        .clone()
        .unwrap_or_else(|| format!("ob{}", unix_ns() / 1_000_000_000 % 100_000_000));
    let n_ep = endpoints.len();
    let most = a
        .clients
        .iter()
        .chain(&a.list_clients)
        .copied()
        .max()
        .unwrap_or(1);
    let per_ep = most
        .div_ceil(n_ep)
        .clamp(1, (max_conns.max(1) / n_ep).max(1));
    let pool = make_pool(a.target, endpoints, per_ep, timeout).await?;
    eprintln!(
        "flotilla-bench: {system}: {} connections over {n_ep} endpoints; namespaces {run_id}-*",
        pool.total()
    );
    let sample = serde_json::to_vec(&pod(
        &format!("{run_id}-create"),
        "c-16-123-4567",
        false,
        &[],
    ))?;
    eprintln!("flotilla-bench: pod JSON is {} bytes", sample.len());
    if a.target == Target::Flotilla {
        // What the API makes of the pod: warnings (dropped fields) and the
        // size of the object it stores (defaults, uid, timestamps added).
        let ns = format!("{run_id}-create");
        ensure_namespace(a.target, endpoints, &ns).await?;
        let c = connect_all(endpoints)?;
        let obj = pod(&ns, "dry-run", false, &[]);
        match c.create("pods", &ns, &obj, true).await {
            Ok((stored, warnings)) => println!(
                "{{\"system\":\"{system}\",\"workload\":\"object\",\"sent_bytes\":{},\"stored_bytes\":{},\"warnings\":{}}}",
                sample.len(),
                serde_json::to_vec(&stored).map(|v| v.len()).unwrap_or(0),
                crate::json_array(&warnings)
            ),
            Err(e) => eprintln!("flotilla-bench: dry-run create failed: {e}"),
        }
    }
    let conns = pool.total().to_string();
    let obj_bytes = sample.len().to_string();

    let mut read_names: Option<Arc<Vec<String>>> = None;
    let read_ns = format!("{run_id}-read");
    for phase in &a.phases {
        match phase {
            Phase::Create => {
                let ns = format!("{run_id}-create");
                ensure_namespace(a.target, endpoints, &ns).await?;
                for &c in &a.clients {
                    let work = Work::Create {
                        ns: ns.clone(),
                        prefix: format!("c-{c}"),
                    };
                    let r = closed_loop(&pool, c, a.secs, timeout, work, a.seed).await;
                    println!(
                        "{}",
                        point_json(
                            system,
                            "create",
                            &[
                                ("clients", c.to_string()),
                                ("conns", conns.clone()),
                                ("object_bytes", obj_bytes.clone())
                            ],
                            &r.tally,
                            r.secs
                        )
                    );
                }
            }
            Phase::Get | Phase::List => {
                if read_names.is_none() {
                    ensure_namespace(a.target, endpoints, &read_ns).await?;
                    let t0 = Instant::now();
                    let names =
                        populate(&pool, &read_ns, a.objects, a.selected_percent, timeout).await?;
                    eprintln!(
                        "flotilla-bench: {system}: wrote {} pods into {read_ns} in {:.1} s",
                        names.len(),
                        t0.elapsed().as_secs_f64()
                    );
                    read_names = Some(Arc::new(names));
                }
                let names = read_names.clone().unwrap_or_default();
                if *phase == Phase::Get {
                    for serializable in [false, true] {
                        for &c in &a.clients {
                            let work = Work::Get {
                                ns: read_ns.clone(),
                                names: names.clone(),
                                serializable,
                            };
                            let r = closed_loop(&pool, c, a.secs, timeout, work, a.seed).await;
                            println!(
                                "{}",
                                point_json(
                                    system,
                                    if serializable { "get-s" } else { "get-l" },
                                    &[("clients", c.to_string()), ("conns", conns.clone())],
                                    &r.tally,
                                    r.secs
                                )
                            );
                        }
                    }
                } else {
                    for selector in ["", "tier=selected"] {
                        if a.target == Target::Etcd && !selector.is_empty() {
                            // etcd has no label selectors: a reader fetches
                            // the whole prefix (the row above) and filters.
                            continue;
                        }
                        for &c in &a.list_clients {
                            let work = Work::List {
                                ns: read_ns.clone(),
                                selector: selector.to_string(),
                            };
                            let r = closed_loop(&pool, c, a.secs, timeout, work, a.seed).await;
                            println!(
                                "{}",
                                point_json(
                                    system,
                                    if selector.is_empty() {
                                        "list"
                                    } else {
                                        "list-selector"
                                    },
                                    &[
                                        ("clients", c.to_string()),
                                        ("conns", conns.clone()),
                                        ("objects", a.objects.to_string()),
                                        (
                                            "items",
                                            r.items.map(|n| n.to_string()).unwrap_or("null".into())
                                        ),
                                    ],
                                    &r.tally,
                                    r.secs
                                )
                            );
                        }
                    }
                }
            }
            Phase::Rate => {
                let ns = format!("{run_id}-rate");
                ensure_namespace(a.target, endpoints, &ns).await?;
                let (t, secs, scheduled, lag) =
                    fixed_rate(&pool, &ns, a.rate, a.rate_secs, timeout).await;
                println!(
                    "{}",
                    point_json(
                        system,
                        "rate",
                        &[
                            ("target_rate", format!("{}", a.rate)),
                            ("scheduled", scheduled.to_string()),
                            ("conns", conns.clone()),
                            ("dispatch_lag_max_ms", ms(lag)),
                        ],
                        &t,
                        secs
                    )
                );
            }
            Phase::Watch => {
                let ns = format!("{run_id}-watch");
                ensure_namespace(a.target, endpoints, &ns).await?;
                println!("{}", watch_point(a, endpoints, &ns, timeout).await?);
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Report: markdown tables from the JSON lines of both systems

fn num(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) => {
            let s = format!("{x:.decimals$}");
            if decimals == 0 {
                // Thousands separators for counts and rates.
                let (neg, digits) = s
                    .strip_prefix('-')
                    .map_or((false, s.as_str()), |d| (true, d));
                let mut out = String::new();
                for (i, ch) in digits.chars().enumerate() {
                    if i > 0 && (digits.len() - i) % 3 == 0 {
                        out.push(',');
                    }
                    out.push(ch);
                }
                if neg {
                    format!("-{out}")
                } else {
                    out
                }
            } else {
                s
            }
        }
        None => "—".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "—".into(),
    }
}

/// Markdown tables (and a goals table) from JSON lines.
pub fn report(files: &[std::path::PathBuf]) -> Result<String> {
    let mut rows: Vec<Value> = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        for line in text.lines().filter(|l| l.starts_with('{')) {
            rows.push(
                serde_json::from_str(line)
                    .with_context(|| format!("bad line in {}: {line}", f.display()))?,
            );
        }
    }
    let find = |sys: &str, wl: &str, clients: Option<u64>| -> Option<&Value> {
        rows.iter().find(|r| {
            r.get("system").and_then(Value::as_str) == Some(sys)
                && r.get("workload").and_then(Value::as_str) == Some(wl)
                && clients.is_none_or(|c| r.get("clients").and_then(Value::as_u64) == Some(c))
        })
    };
    let mut out = String::new();
    // Closed-loop points, both systems side by side.
    let labels: BTreeMap<&str, &str> = [
        ("create", "create pod / put"),
        ("get-l", "get, linearizable / range"),
        ("get-s", "get, serializable / range"),
        ("list", "list namespace / range prefix"),
        ("list-selector", "list, label selector / —"),
    ]
    .into_iter()
    .collect();
    let _ = writeln!(out, "| Workload (Flotilla / etcd) | Clients | Flotilla ops/s | p50 ms | p99 ms | max ms | errors | etcd ops/s | p50 ms | p99 ms | max ms | errors | Flotilla/etcd ops/s |");
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for wl in ["create", "get-l", "get-s", "list", "list-selector"] {
        let mut clients: Vec<u64> = rows
            .iter()
            .filter(|r| r.get("workload").and_then(Value::as_str) == Some(wl))
            .filter_map(|r| r.get("clients").and_then(Value::as_u64))
            .collect();
        clients.sort_unstable();
        clients.dedup();
        for c in clients {
            let f = find("flotilla", wl, Some(c));
            let e = find("etcd", wl, Some(c));
            let g = |r: Option<&Value>, k: &str| r.and_then(|r| num(r, k));
            let mut label = labels[wl].to_string();
            if let Some(items) = g(f, "items").or(g(e, "items")) {
                let _ = write!(label, " ({} items)", items as u64);
            }
            let _ = writeln!(
                out,
                "| {label} | {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(g(f, "throughput"), 0),
                cell(g(f, "p50_ms"), 2),
                cell(g(f, "p99_ms"), 2),
                cell(g(f, "max_ms"), 1),
                cell(g(f, "errors"), 0),
                cell(g(e, "throughput"), 0),
                cell(g(e, "p50_ms"), 2),
                cell(g(e, "p99_ms"), 2),
                cell(g(e, "max_ms"), 1),
                cell(g(e, "errors"), 0),
                ratio(g(f, "throughput"), g(e, "throughput")),
            );
        }
    }
    if let Some(o) = find("flotilla", "object", None) {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Pod JSON sent (both systems): {} bytes; as Flotilla stores and returns it: {} bytes; API warnings: {}.",
            cell(num(o, "sent_bytes"), 0),
            cell(num(o, "stored_bytes"), 0),
            match o.get("warnings").and_then(Value::as_array) {
                Some(w) if !w.is_empty() => w.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "),
                _ => "none".into(),
            }
        );
    }
    // Fixed rate.
    let _ = writeln!(out);
    let _ = writeln!(out, "| Fixed rate (open loop, latency from the scheduled send time) | Flotilla (create pod) | etcd (put) |");
    let _ = writeln!(out, "|---|---:|---:|");
    let (f, e) = (find("flotilla", "rate", None), find("etcd", "rate", None));
    let g = |r: Option<&Value>, k: &str| r.and_then(|r| num(r, k));
    for (label, k, d) in [
        ("target rate (/s)", "target_rate", 0),
        ("requests scheduled", "scheduled", 0),
        ("acknowledged", "ops", 0),
        ("errors", "errors", 0),
        ("achieved (/s)", "throughput", 0),
        ("p50 latency (ms)", "p50_ms", 2),
        ("p99 latency (ms)", "p99_ms", 2),
        ("max latency (ms)", "max_ms", 1),
        (
            "load generator's max dispatch lag (ms)",
            "dispatch_lag_max_ms",
            1,
        ),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {} | {} |",
            cell(g(f, k), d),
            cell(g(e, k), d)
        );
    }
    // Watch.
    let _ = writeln!(out);
    let _ = writeln!(out, "| Watch delivery (now − writer's timestamp, every delivery) | Flotilla (watch pods) | etcd (watch prefix) |");
    let _ = writeln!(out, "|---|---:|---:|");
    let (f, e) = (find("flotilla", "watch", None), find("etcd", "watch", None));
    for (label, k, d) in [
        ("watchers", "watchers", 0),
        ("watches open", "watches_open", 0),
        ("writes per second", "write_rate", 0),
        ("writes acknowledged / attempted", "", 0),
        ("of which updates", "updates", 0),
        ("writer's p99 ack latency (ms)", "write_p99_ms", 2),
        (
            "deliveries expected (acked writes × watchers)",
            "expected",
            0,
        ),
        ("delivered", "delivered", 0),
        ("missing", "missing", 0),
        ("duplicates", "duplicates", 0),
        (
            "deliveries of writes that had failed (applied anyway)",
            "unacked_delivered",
            0,
        ),
        ("stream errors", "stream_errors", 0),
        ("p50 delivery latency (ms)", "p50_ms", 2),
        ("p99 delivery latency (ms)", "p99_ms", 2),
        ("max delivery latency (ms)", "max_ms", 1),
        (
            "p50 delivery after the writer's acknowledgement (ms)",
            "after_ack_p50_ms",
            2,
        ),
        (
            "p99 delivery after the writer's acknowledgement (ms)",
            "after_ack_p99_ms",
            2,
        ),
    ] {
        if k.is_empty() {
            let both = |r: Option<&Value>| match (g(r, "writes_acked"), g(r, "writes")) {
                (Some(a), Some(b)) => format!("{} / {}", cell(Some(a), 0), cell(Some(b), 0)),
                _ => "—".into(),
            };
            let _ = writeln!(out, "| {label} | {} | {} |", both(f), both(e));
        } else {
            let _ = writeln!(
                out,
                "| {label} | {} | {} |",
                cell(g(f, k), d),
                cell(g(e, k), d)
            );
        }
    }
    let (f, e) = (find("flotilla", "rss", None), find("etcd", "rss", None));
    if f.is_some() || e.is_some() {
        let mib = |r: Option<&Value>| g(r, "rss_kib").map(|k| k / 1024.0);
        let _ = writeln!(
            out,
            "| RSS of the three members after the run (MiB) | {} | {} |",
            cell(mib(f), 0),
            cell(mib(e), 0)
        );
    }
    // Goals (issue 3), judged on Flotilla's figures.
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "not measured",
    };
    let rate = find("flotilla", "rate", None);
    let rate_p99 = g(rate, "p99_ms");
    let full_rate = g(rate, "target_rate").is_some_and(|r| r >= 1000.0);
    let rate_ok = rate_p99
        .filter(|_| full_rate)
        .map(|p| p < 50.0 && g(rate, "errors") == Some(0.0));
    let best = |wl: &str| {
        rows.iter()
            .filter(|r| r.get("system").and_then(Value::as_str) == Some("flotilla"))
            .filter(|r| r.get("workload").and_then(Value::as_str) == Some(wl))
            .filter_map(|r| Some((num(r, "throughput")?, r.get("clients")?.as_u64()?)))
            .fold(None, |acc: Option<(f64, u64)>, x| match acc {
                Some(a) if a.0 >= x.0 => Some(a),
                _ => Some(x),
            })
    };
    let (gl, gs) = (best("get-l"), best("get-s"));
    let w = find("flotilla", "watch", None);
    let w_ok = g(w, "p99_ms")
        .filter(|_| g(w, "watchers").is_some_and(|n| n >= 1000.0))
        .map(|p| p < 100.0 && g(w, "missing") == Some(0.0));
    let mut_p99: Vec<(String, f64)> = rows
        .iter()
        .filter(|r| r.get("system").and_then(Value::as_str) == Some("flotilla"))
        .filter(|r| {
            matches!(
                r.get("workload").and_then(Value::as_str),
                Some("create" | "rate")
            )
        })
        .filter_map(|r| {
            let name = match r.get("clients").and_then(Value::as_u64) {
                Some(c) => format!("create at {c} clients"),
                None => "fixed rate".into(),
            };
            Some((name, num(r, "p99_ms")?))
        })
        .collect();
    let worst = mut_p99
        .iter()
        .cloned()
        .fold(None, |acc: Option<(String, f64)>, x| match acc {
            Some(a) if a.1 >= x.1 => Some(a),
            _ => Some(x),
        });
    let _ = writeln!(out);
    let _ = writeln!(out, "| Goal (issue 3) | Status in this run |");
    let _ = writeln!(out, "|---|---|");
    let _ = writeln!(
        out,
        "| mutating p99 < 50 ms at 1,000 creates/s | {}: p99 {} ms at {} creates/s, {} errors |",
        verdict(rate_ok),
        cell(rate_p99, 2),
        cell(g(rate, "target_rate"), 0),
        cell(g(rate, "errors"), 0)
    );
    let reads_ok = match (gl, gs) {
        (None, None) => None,
        _ => Some(
            gl.map(|x| x.0).unwrap_or(0.0) > 20_000.0 || gs.map(|x| x.0).unwrap_or(0.0) > 20_000.0,
        ),
    };
    let describe = |x: Option<(f64, u64)>| match x {
        Some((t, c)) => format!("{}/s at {c} clients", cell(Some(t), 0)),
        None => "—".into(),
    };
    let _ = writeln!(
        out,
        "| single-object reads > 20,000/s | {}: best linearizable {}, best serializable {} |",
        verdict(reads_ok),
        describe(gl),
        describe(gs)
    );
    let _ = writeln!(
        out,
        "| watch delivery p99 < 100 ms with 1,000 watchers (all delivered) | {}: p99 {} ms with {} watchers, {} of {} delivered |",
        verdict(w_ok),
        cell(g(w, "p99_ms"), 2),
        cell(g(w, "watchers"), 0),
        cell(g(w, "delivered"), 0),
        cell(g(w, "expected"), 0)
    );
    let _ = writeln!(
        out,
        "| floor: Kubernetes SLO, mutating p99 ≤ 1 s | {}: worst p99 {} |",
        verdict(worst.as_ref().map(|w| w.1 <= 1000.0)),
        worst
            .map(|(n, p)| format!("{} ms ({n})", cell(Some(p), 2)))
            .unwrap_or_else(|| "—".into())
    );
    Ok(out)
}
