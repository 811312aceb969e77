//! `flotilla-bench`: a load generator that speaks the etcd v3 gRPC API.
//!
//! It drives any etcd-v3-compatible cluster (etcd itself, or Flotilla's
//! masters) through a list of endpoints. Clients are spread round-robin over
//! the endpoints and share a bounded pool of HTTP/2 connections (each
//! connection multiplexes many concurrent requests), so that a thousand
//! clients do not need a thousand sockets.
//!
//! Every workload prints exactly one JSON line on stdout; diagnostics go to
//! stderr. Request failures are counted, never fatal, and every loop is
//! bounded both by a count and by a deadline.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::{request_op, PutRequest, RangeRequest, RequestOp, TxnRequest};
use flotilla_testkit::{poll_statuses, Probe};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tonic::transport::{Channel, Endpoint};

mod objects;
mod schedule;
mod stored;
mod workloads;

/// jemalloc, as the masters use: the load generator shares the machine's
/// two cores with the members it measures, and under glibc's malloc a list
/// of 1,000 decoded pods cost it about 1.6 times the CPU (a fifth of it in
/// malloc_consolidate), so that the list points measured the client.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Load generator for etcd v3 API servers (etcd, Flotilla masters).
#[derive(Debug, Parser)]
#[command(name = "flotilla-bench", version, about, long_about = None)]
struct Cli {
    /// Comma-separated client endpoints (host:port, or a full http:// URL).
    /// Clients are assigned to them round-robin.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    endpoints: Vec<String>,

    /// Upper bound on gRPC (HTTP/2) connections opened by a workload; clients
    /// share them. Each endpoint gets at least one connection.
    #[arg(long, global = true, default_value_t = 64)]
    max_conns: usize,

    /// Tokio worker threads for the load generator (0 = one per CPU).
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,

    /// The CA of the servers' certificates: connect over TLS (etcdctl's
    /// --cacert).
    #[arg(long, global = true)]
    cacert: Option<std::path::PathBuf>,
    /// A client certificate to present (etcdctl's --cert), with --key.
    #[arg(long, global = true, requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// The key of --cert.
    #[arg(long, global = true, requires = "cert")]
    key: Option<std::path::PathBuf>,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Issue `--total` Put requests split among `--clients` concurrent clients.
    Put {
        #[command(flatten)]
        load: LoadArgs,
        /// Size of each value in bytes.
        #[arg(long, default_value_t = 256)]
        val_size: usize,
        /// Write keys 0,1,2,... (modulo the keyspace) instead of random keys;
        /// with `--total` equal to `--keyspace` this populates every key once.
        #[arg(long)]
        sequential: bool,
        /// Attach every key written to this lease, granted beforehand
        /// (hexadecimal, as `etcdctl lease grant` prints it).
        #[arg(long, value_parser = parse_lease)]
        lease: Option<i64>,
        /// Puts per request: above 1, each request is a transaction of this
        /// many puts on consecutive keys (request i writes keys i*N to
        /// i*N+N-1), and `--total` and `--keyspace` count requests.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        puts_per_txn: u64,
    },
    /// Issue `--total` single-key Range requests split among `--clients`.
    Range {
        #[command(flatten)]
        load: LoadArgs,
        /// Read consistency: l = linearizable, s = serializable.
        #[arg(long, value_enum, default_value_t = Consistency::L)]
        consistency: Consistency,
    },
    /// Retry a Put until one is acknowledged; print the milliseconds elapsed
    /// since `--since-unix-ns` (used to measure leader failover).
    UntilWrite {
        /// Wall-clock start of the measurement, in nanoseconds since the Unix
        /// epoch (e.g. `date +%s%N` taken just before killing the leader).
        #[arg(long)]
        since_unix_ns: Option<u128>,
        /// Give up (exit status 1) after this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
        /// Deadline of each Put attempt, in milliseconds; attempts rotate
        /// through the endpoints.
        #[arg(long, default_value_t = 200)]
        attempt_ms: u64,
    },
    /// Print the endpoint of the leader: the one whose Maintenance.Status
    /// says it is the leader (header.member_id == leader), named by every
    /// answering endpoint that names a leader; fail if there is none.
    Leader {
        /// Keep polling up to this many seconds for a leader (0 = ask once).
        #[arg(long, default_value_t = 0.0)]
        wait_secs: f64,
    },
    /// Object API benchmark: pod creates, gets, lists, a fixed-rate run and
    /// watch delivery against Flotilla's masters, or the same JSON bytes as
    /// raw puts, ranges and watches against etcd (`--target etcd`). Prints
    /// one JSON line per point.
    Objects(objects::ObjectsArgs),
    /// Markdown tables (both systems side by side, and the goals of issue 3)
    /// from the JSON lines `objects` printed.
    ObjectsReport {
        /// Files of JSON lines (any mix of systems).
        files: Vec<std::path::PathBuf>,
    },
    /// Scheduler benchmark: hollow nodes, pods created as fast as possible
    /// and at a fixed rate, pods per second from creation to bound and the
    /// latency of that. Prints one JSON line per point.
    Schedule(schedule::ScheduleArgs),
    /// Workload controllers' cost: a Deployment's pods all Ready on hollow
    /// nodes, against the same pods created directly. Prints one JSON line
    /// per phase and their ratio.
    Workloads(workloads::WorkloadsArgs),
    /// Succeed when every endpoint answers Maintenance.Status and all of them
    /// report the same, non-zero leader, which is one of them and says so.
    /// Prints one JSON line.
    Healthy {
        /// Keep polling up to this many seconds (0 = ask once).
        #[arg(long, default_value_t = 0.0)]
        wait_secs: f64,
    },
}

#[derive(Debug, Clone, clap::Args)]
struct LoadArgs {
    /// Number of concurrent clients (each has one request in flight).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Total number of requests, split evenly among the clients.
    #[arg(long, default_value_t = 10_000)]
    total: u64,
    /// Size of each key in bytes (keys are zero-padded decimal numbers).
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Number of distinct keys; keys are drawn uniformly from it
    /// (default: equal to --total).
    #[arg(long)]
    keyspace: Option<u64>,
    /// Deadline of each request, in milliseconds (an expired request counts
    /// as an error).
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    /// Stop the whole run after this many seconds even if `--total` was not
    /// reached.
    #[arg(long, default_value_t = 300)]
    max_secs: u64,
    /// Seed for the key generator (client i uses seed + i).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Consistency {
    /// Linearizable (the default for etcd clients).
    L,
    /// Serializable (served from the local member's state).
    S,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match start(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever RUST_BACKTRACE says: scripts read stderr.
            eprintln!("flotilla-bench: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn start(cli: Cli) -> Result<()> {
    if cli.endpoints.is_empty() {
        bail!("--endpoints is empty");
    }
    if cli.cacert.is_some() || cli.cert.is_some() {
        let files = flotilla_security::tls::ClientTlsFiles {
            ca: cli.cacert.clone(),
            cert: cli.cert.clone(),
            key: cli.key.clone(),
        };
        let _ = TLS.set(files.tonic_config().context("--cacert, --cert, --key")?);
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if cli.threads > 0 {
        rt.worker_threads(cli.threads);
    }
    let rt = rt.build().context("building the tokio runtime")?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    match &cli.cmd {
        Cmd::Put {
            load,
            val_size,
            sequential,
            lease,
            puts_per_txn,
        } => {
            let op = Op::Put {
                val_size: *val_size,
                sequential: *sequential,
                lease: lease.unwrap_or(0),
                per_txn: *puts_per_txn,
            };
            let report = run_load(&cli, load, op).await?;
            println!("{}", report.to_json());
        }
        Cmd::Range { load, consistency } => {
            let op = Op::Range {
                serializable: *consistency == Consistency::S,
            };
            let report = run_load(&cli, load, op).await?;
            println!("{}", report.to_json());
        }
        Cmd::Objects(a) => objects::run(&cli.endpoints, cli.max_conns, a).await?,
        Cmd::Schedule(a) => schedule::run(&cli.endpoints, a).await?,
        Cmd::Workloads(a) => workloads::run(&cli.endpoints, a).await?,
        Cmd::ObjectsReport { files } => print!("{}", objects::report(files)?),
        Cmd::UntilWrite {
            since_unix_ns,
            timeout_secs,
            attempt_ms,
        } => {
            until_write(&cli.endpoints, *since_unix_ns, *timeout_secs, *attempt_ms).await?;
        }
        Cmd::Leader { wait_secs } => {
            let leader = poll_statuses(&cli.endpoints, &probe(), secs_f64(*wait_secs), |st| {
                st.leader().map(|l| st.0[l].0.clone())
            })
            .await
            .map_err(|why| anyhow!("no leader: {why}"))?;
            println!("{leader}");
        }
        Cmd::Healthy { wait_secs } => {
            let leader = poll_statuses(&cli.endpoints, &probe(), secs_f64(*wait_secs), |st| {
                st.ready()
                    .map(|l| st.0[l].1.as_ref().map_or(0, |s| s.member_id))
            })
            .await
            .map_err(|why| anyhow!("not healthy: {why}"))?;
            println!(
                "{{\"healthy\":true,\"leader_id\":\"{leader:x}\",\"members\":{}}}",
                cli.endpoints.len()
            );
        }
    }
    Ok(())
}

fn secs_f64(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() && s > 0.0 { s } else { 0.0 })
}

/// TLS to the servers, when --cacert was given (set once at start).
static TLS: std::sync::OnceLock<tonic::transport::ClientTlsConfig> = std::sync::OnceLock::new();

fn tls() -> Option<tonic::transport::ClientTlsConfig> {
    TLS.get().cloned()
}

fn endpoint(ep: &str, connect_timeout: Duration) -> Result<Endpoint> {
    let uri = flotilla_testkit::endpoint_uri(ep, TLS.get().is_some());
    let mut e = Endpoint::from_shared(uri)
        .with_context(|| format!("bad endpoint {ep:?}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    if let Some(t) = tls() {
        e = e.tls_config(t).context("TLS configuration")?;
    }
    Ok(e)
}

// ---------------------------------------------------------------------------
// Throughput / latency workloads

#[derive(Debug, Clone, Copy)]
enum Op {
    Put {
        val_size: usize,
        sequential: bool,
        /// 0: none.
        lease: i64,
        /// Puts per request (1: a Put, more: a Txn of them).
        per_txn: u64,
    },
    Range {
        serializable: bool,
    },
}

/// A lease id as etcdctl prints it: hexadecimal, positive.
fn parse_lease(s: &str) -> Result<i64, String> {
    match i64::from_str_radix(s.trim_start_matches("0x"), 16) {
        Ok(id) if id > 0 => Ok(id),
        Ok(_) => Err(format!("lease id {s} is not positive")),
        Err(e) => Err(format!("lease id {s:?} is not hexadecimal: {e}")),
    }
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Put { .. } => "put",
            Op::Range {
                serializable: false,
            } => "range-l",
            Op::Range { serializable: true } => "range-s",
        }
    }
}

/// What one client (or all of them, merged) measured.
struct Tally {
    hist: Histogram<u64>,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            // Microseconds, from 1 µs to one hour, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            ops: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }

    fn merge(&mut self, other: Tally) {
        // Both histograms share the same bounds, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
        self.ops += other.ops;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

struct Report {
    workload: &'static str,
    clients: usize,
    endpoints: usize,
    conns: usize,
    tally: Tally,
    seconds: f64,
}

impl Report {
    fn to_json(&self) -> String {
        let t = &self.tally;
        let ms = |q: Option<u64>| match q {
            Some(us) if t.ops > 0 => format!("{:.3}", us as f64 / 1000.0),
            _ => "null".to_string(),
        };
        let throughput = if self.seconds > 0.0 {
            t.ops as f64 / self.seconds
        } else {
            0.0
        };
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\"workload\":\"{}\",\"clients\":{},\"endpoints\":{},\"conns\":{},\"ops\":{},\"seconds\":{:.3},\"throughput\":{:.1},\"p50_ms\":{},\"p99_ms\":{},\"max_ms\":{},\"errors\":{}",
            self.workload,
            self.clients,
            self.endpoints,
            self.conns,
            t.ops,
            self.seconds,
            throughput,
            ms(Some(t.hist.value_at_quantile(0.50))),
            ms(Some(t.hist.value_at_quantile(0.99))),
            ms(Some(t.hist.max())),
            t.errors,
        );
        if let Some(e) = &t.first_error {
            let _ = write!(s, ",\"first_error\":{}", json_string(e));
        }
        s.push('}');
        s
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().take(300) {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_array(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| json_string(s)).collect();
    format!("[{}]", parts.join(","))
}

/// Decimal, zero-padded to exactly `size` bytes.
fn make_key(idx: u64, size: usize) -> Vec<u8> {
    format!("{idx:0size$}").into_bytes()
}

async fn run_load(cli: &Cli, load: &LoadArgs, op: Op) -> Result<Report> {
    if load.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let keyspace = load.keyspace.unwrap_or(load.total).max(1);
    let per_txn = match op {
        Op::Put { per_txn, .. } => per_txn,
        Op::Range { .. } => 1,
    };
    let last_key = keyspace
        .checked_mul(per_txn)
        .ok_or_else(|| anyhow!("--keyspace times --puts-per-txn overflows"))?
        - 1;
    if last_key.to_string().len() > load.key_size {
        bail!(
            "key {last_key} (of --keyspace {keyspace}) does not fit in --key-size {} decimal digits",
            load.key_size
        );
    }

    // Connection pool: per endpoint, enough connections for its share of the
    // clients, within --max-conns overall. Client i talks to endpoint i % E.
    let n_ep = cli.endpoints.len();
    let budget = (cli.max_conns.max(1) / n_ep).max(1);
    let per_ep = load.clients.div_ceil(n_ep).clamp(1, budget);
    let mut connects = Vec::new();
    for ep in &cli.endpoints {
        let e = endpoint(ep, Duration::from_secs(5))?;
        for _ in 0..per_ep {
            let e = e.clone();
            let name = ep.clone();
            connects.push(async move {
                e.connect()
                    .await
                    .with_context(|| format!("connecting to {name}"))
            });
        }
    }
    let channels: Vec<Channel> = futures::future::try_join_all(connects).await?;
    let pool: Vec<&[Channel]> = channels.chunks(per_ep).collect();

    // Split the total among clients.
    let base = load.total / load.clients as u64;
    let extra = load.total % load.clients as u64;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(load.max_secs);
    let timeout = Duration::from_millis(load.timeout_ms.max(1));
    let mut handles = Vec::with_capacity(load.clients);
    let mut first_index = 0u64;
    for i in 0..load.clients {
        let n_ops = base + u64::from((i as u64) < extra);
        let ch = pool[i % n_ep][(i / n_ep) % per_ep].clone();
        let load = load.clone();
        let my_first = first_index;
        first_index += n_ops;
        handles.push(tokio::spawn(async move {
            client_loop(
                ch, op, load, keyspace, n_ops, my_first, i as u64, deadline, timeout,
            )
            .await
        }));
    }
    let mut total = Tally::new();
    for h in handles {
        match h.await {
            Ok(t) => total.merge(t),
            Err(e) => total.error(format!("client task failed: {e}")),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Report {
        workload: op.name(),
        clients: load.clients,
        endpoints: n_ep,
        conns: channels.len(),
        tally: total,
        seconds,
    })
}

/// Whether a request was answered within `timeout`, or why not.
async fn answered<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<(), String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(status_text(&status)),
        Err(_) => Err(format!("deadline of {timeout:?} exceeded")),
    }
}

#[allow(clippy::too_many_arguments)]
async fn client_loop(
    ch: Channel,
    op: Op,
    load: LoadArgs,
    keyspace: u64,
    n_ops: u64,
    first_index: u64,
    client: u64,
    deadline: Instant,
    timeout: Duration,
) -> Tally {
    let mut tally = Tally::new();
    let mut kv = KvClient::new(ch);
    let mut rng = StdRng::seed_from_u64(load.seed.wrapping_add(client));
    let value = match op {
        Op::Put { val_size, .. } => {
            let mut v = vec![0u8; val_size];
            rng.fill_bytes(&mut v);
            v
        }
        Op::Range { .. } => Vec::new(),
    };
    for j in 0..n_ops {
        if Instant::now() >= deadline {
            break;
        }
        let idx = match op {
            Op::Put {
                sequential: true, ..
            } => (first_index + j) % keyspace,
            _ => rng.gen_range(0..keyspace),
        };
        let t0 = Instant::now();
        let result: Result<(), String> = match op {
            Op::Put { lease, per_txn, .. } if per_txn > 1 => {
                let put = |i: u64| RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: make_key(idx * per_txn + i, load.key_size),
                        value: value.clone(),
                        lease,
                        ..Default::default()
                    })),
                };
                let req = TxnRequest {
                    success: (0..per_txn).map(put).collect(),
                    ..Default::default()
                };
                answered(timeout, kv.txn(req)).await
            }
            Op::Put { lease, .. } => {
                let req = PutRequest {
                    key: make_key(idx, load.key_size),
                    value: value.clone(),
                    lease,
                    ..Default::default()
                };
                answered(timeout, kv.put(req)).await
            }
            Op::Range { serializable } => {
                let req = RangeRequest {
                    key: make_key(idx, load.key_size),
                    serializable,
                    ..Default::default()
                };
                answered(timeout, kv.range(req)).await
            }
        };
        match result {
            Ok(()) => {
                let us = t0.elapsed().as_micros().max(1) as u64;
                tally.hist.saturating_record(us);
                tally.ops += 1;
            }
            Err(e) => {
                tally.error(e);
                // Do not spin on an instantly failing endpoint.
                if t0.elapsed() < Duration::from_millis(1) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    tally
}

fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

// ---------------------------------------------------------------------------
// Failover measurement

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

async fn until_write(
    endpoints: &[String],
    since_unix_ns: Option<u128>,
    timeout_secs: u64,
    attempt_ms: u64,
) -> Result<()> {
    let since = since_unix_ns.unwrap_or_else(unix_ns);
    let attempt = Duration::from_millis(attempt_ms.max(1));
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut clients = Vec::with_capacity(endpoints.len());
    for ep in endpoints {
        clients.push(KvClient::new(endpoint(ep, attempt)?.connect_lazy()));
    }
    let mut attempts = 0u64;
    let mut last_error = String::new();
    // The first few distinct failures, with the ms (since T) they were seen.
    let mut samples: Vec<String> = Vec::new();
    // Bounded by the deadline; the attempt cap is a second, generous bound.
    let max_attempts = timeout_secs.saturating_mul(100_000).max(1);
    while Instant::now() < deadline && attempts < max_attempts {
        let i = (attempts % clients.len() as u64) as usize;
        attempts += 1;
        let req = PutRequest {
            key: b"flotilla-bench/failover".to_vec(),
            value: unix_ns().to_string().into_bytes(),
            ..Default::default()
        };
        let t0 = Instant::now();
        let left = deadline.saturating_duration_since(t0).min(attempt);
        match tokio::time::timeout(left, clients[i].put(req)).await {
            Ok(Ok(_)) => {
                let now = unix_ns();
                let ms = now.saturating_sub(since) as f64 / 1e6;
                println!(
                    "{{\"workload\":\"until-write\",\"ok\":true,\"ms\":{ms:.1},\"attempts\":{attempts},\"endpoint\":{},\"failures\":{}}}",
                    json_string(&endpoints[i]),
                    json_array(&samples)
                );
                return Ok(());
            }
            Ok(Err(status)) => last_error = format!("{}: {}", endpoints[i], status_text(&status)),
            Err(_) => last_error = format!("{}: attempt deadline exceeded", endpoints[i]),
        }
        if samples.len() < 8 && !samples.iter().any(|s| s.ends_with(&last_error)) {
            let at = unix_ns().saturating_sub(since) as f64 / 1e6;
            samples.push(format!("{at:.0}ms {last_error}"));
        }
        // An endpoint that refuses at once should not make us spin.
        if t0.elapsed() < Duration::from_millis(5) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let ms = unix_ns().saturating_sub(since) as f64 / 1e6;
    println!(
        "{{\"workload\":\"until-write\",\"ok\":false,\"ms\":{ms:.1},\"attempts\":{attempts},\"last_error\":{},\"failures\":{}}}",
        json_string(&last_error),
        json_array(&samples)
    );
    bail!("no put was acknowledged within {timeout_secs} s ({attempts} attempts; last error: {last_error})")
}

// ---------------------------------------------------------------------------
// Leader / health

/// How `leader` and `healthy` ask each endpoint for its Maintenance.Status
/// (within 2 s, over TLS when --cacert was given); `flotilla_testkit` says
/// which is the leader and whether the cluster is ready.
fn probe() -> Probe {
    Probe::new(Duration::from_secs(2)).with_tls(tls())
}
