//! Concurrent clients speaking the etcd v3 API. Each worker keeps talking to
//! one master until a request fails, then moves to another one at random;
//! every request has a deadline, and one that misses it is recorded with an
//! unknown outcome (`info`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::lease_client::LeaseClient;
use flotilla_proto::etcdserverpb::request_op::Request;
use flotilla_proto::etcdserverpb::watch_client::WatchClient;
use flotilla_proto::etcdserverpb::watch_request::RequestUnion;
use flotilla_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use futures::StreamExt as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::checker;
use crate::history::{Clock, Entry, Op, Recorder, Status};

/// The workloads, by name.
pub const ALL: [&str; 5] = ["register", "set", "watch", "lease", "objects"];

pub const REGISTER_PREFIX: &str = "jepsen/reg/";
pub const SET_PREFIX: &str = "jepsen/set/";
pub const WATCH_PREFIX: &str = "jepsen/watch/";
pub const LEASE_PREFIX: &str = "jepsen/lease/";

/// What every worker shares.
#[derive(Clone)]
pub struct Ctx {
    /// (name, client address) of every master.
    pub nodes: Vec<(String, String)>,
    pub clock: Clock,
    pub rec: Recorder,
    pub op_timeout: Duration,
    pub seed: u64,
    /// Stops the workers that generate load.
    pub stop: CancellationToken,
    /// Stops everything, watchers included (end of the run, or Ctrl-C).
    pub abort: CancellationToken,
    /// Register reads with `serializable: true` (deliberately unsafe: to
    /// show that the checker catches the stale reads this allows).
    pub serializable_reads: bool,
    /// Where the watch workload's watchers are, for the compaction nemesis.
    pub watch_floor: Arc<WatchFloor>,
}

/// The revision each watcher of the watch workload resumes from. The
/// compaction nemesis compacts no further than the lowest: a watcher that
/// resumes past a compaction is refused by etcd and Flotilla alike (etcd's
/// clients then list again), which this workload does not do.
#[derive(Default)]
pub struct WatchFloor(std::sync::Mutex<BTreeMap<u32, i64>>);

impl WatchFloor {
    fn set(&self, watcher: u32, next: i64) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(watcher, next);
        }
    }

    /// The lowest revision a watcher resumes from (None: no watchers, any
    /// revision may be compacted).
    pub fn floor(&self) -> Option<i64> {
        self.0.lock().ok().and_then(|m| m.values().min().copied())
    }
}

pub use flotilla_proto::prefix_end;

/// One worker's connections (one lazily connected channel per master).
struct Conn {
    nodes: Vec<(String, String)>,
    chans: Vec<Option<Channel>>,
    cur: usize,
    rng: StdRng,
    timeout: Duration,
}

impl Conn {
    fn new(ctx: &Ctx, worker: u32) -> Conn {
        Conn {
            nodes: ctx.nodes.clone(),
            chans: vec![None; ctx.nodes.len()],
            cur: worker as usize % ctx.nodes.len(),
            rng: StdRng::seed_from_u64(ctx.seed ^ (worker as u64).wrapping_mul(0x9e37_79b9)),
            timeout: ctx.op_timeout,
        }
    }

    fn node(&self) -> String {
        self.nodes[self.cur].0.clone()
    }

    fn chan(&mut self) -> Channel {
        if self.chans[self.cur].is_none() {
            let ep = Endpoint::from_shared(format!("http://{}", self.nodes[self.cur].1))
                .expect("valid address")
                .connect_timeout(Duration::from_secs(1))
                .timeout(self.timeout)
                .tcp_nodelay(true);
            self.chans[self.cur] = Some(ep.connect_lazy());
        }
        self.chans[self.cur].clone().unwrap()
    }

    /// After a failed request: drop the connection, pick another master.
    fn failed(&mut self) {
        self.chans[self.cur] = None;
        if self.nodes.len() > 1 {
            let other = self.rng.gen_range(0..self.nodes.len() - 1);
            self.cur = if other >= self.cur { other + 1 } else { other };
        }
    }
}

/// Why a request got no answer.
struct Failure {
    status: Status,
    error: String,
}

/// Runs `fut` with the request deadline; a refused connection is a definite
/// failure (the request was never sent), anything else is unknown.
async fn call<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(Failure {
            status: Status::Info,
            error: "timeout".into(),
        }),
        Ok(Err(s)) => {
            let mut text = format!("{:?}: {}", s.code(), s.message());
            let mut src = std::error::Error::source(&s);
            while let Some(e) = src {
                text.push_str(&format!(": {e}"));
                src = e.source();
            }
            Err(Failure {
                status: if never_sent(&text) {
                    Status::Fail
                } else {
                    Status::Info
                },
                error: text,
            })
        }
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

/// Whether an error's text says the connection was refused, so the request
/// was never sent (a definite failure, not an unknown outcome).
pub(crate) fn never_sent(text: &str) -> bool {
    text.contains("tcp connect error")
        || text.contains("Connection refused")
        || text.contains("error trying to connect")
}

fn record(ctx: &Ctx, worker: u32, node: String, invoke: u64, op: Op, res: Result<(), Failure>) {
    let (status, error) = match res {
        Ok(()) => (Status::Ok, None),
        Err(f) => (f.status, Some(f.error)),
    };
    ctx.rec.record(Entry {
        process: worker,
        node: Some(node),
        invoke,
        complete: ctx.clock.now(),
        status,
        op,
        error,
    });
}

async fn think(rng: &mut StdRng, ms: std::ops::Range<u64>, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(rng.gen_range(ms))) => true,
        _ = stop.cancelled() => false,
    }
}

/// Worker counts of each workload.
pub const REGISTER_WORKERS: u32 = 6;
pub const REGISTER_GROUP: u32 = 3;
pub const REGISTER_OPS_PER_KEY: u64 = 120;
pub const SET_WORKERS: u32 = 3;
pub const WATCH_WRITERS: u32 = 2;
pub const WATCHERS: u32 = 3;
pub const LEASE_WORKERS: u32 = 3;

/// Registers: groups of workers share a key for a bounded number of
/// operations (so that each key's history stays small enough to check),
/// doing reads, writes, deletes and CAS with values in 0..5.
async fn register_worker(ctx: Ctx, worker: u32, counter: Arc<AtomicU64>, group: u32) {
    let groups = REGISTER_WORKERS.div_ceil(REGISTER_GROUP) as u64;
    let mut conn = Conn::new(&ctx, worker);
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ 0x7265_6700 ^ worker as u64);
    while !ctx.stop.is_cancelled() {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let key = format!(
            "{REGISTER_PREFIX}{}",
            group as u64 + groups * (n / REGISTER_OPS_PER_KEY)
        );
        let kb = key.as_bytes().to_vec();
        let node = conn.node();
        let mut kv = KvClient::new(conn.chan());
        let invoke = ctx.clock.now();
        let p: f64 = rng.r#gen();
        let (op, res) = if p < 0.4 {
            let r = call(
                ctx.op_timeout,
                kv.range(RangeRequest {
                    key: kb,
                    serializable: ctx.serializable_reads,
                    ..Default::default()
                }),
            )
            .await;
            match r {
                Ok(resp) => {
                    let value = resp
                        .kvs
                        .first()
                        .and_then(|kv| String::from_utf8_lossy(&kv.value).parse().ok());
                    (Op::Read { key, value }, Ok(()))
                }
                Err(f) => (Op::Read { key, value: None }, Err(f)),
            }
        } else if p < 0.48 {
            // Deleted, then created again by a later write or not: with
            // compaction this is where a removed tombstone could let an
            // older version come back.
            let r = call(
                ctx.op_timeout,
                kv.delete_range(DeleteRangeRequest {
                    key: kb,
                    ..Default::default()
                }),
            )
            .await;
            (Op::Delete { key }, r.map(|_| ()))
        } else if p < 0.75 {
            let value: i64 = rng.gen_range(0..5);
            let r = call(
                ctx.op_timeout,
                kv.put(PutRequest {
                    key: kb,
                    value: value.to_string().into_bytes(),
                    ..Default::default()
                }),
            )
            .await;
            (Op::Write { key, value }, r.map(|_| ()))
        } else {
            let (from, to): (i64, i64) = (rng.gen_range(0..5), rng.gen_range(0..5));
            let r = call(
                ctx.op_timeout,
                kv.txn(TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Value as i32,
                        key: kb.clone(),
                        target_union: Some(TargetUnion::Value(from.to_string().into_bytes())),
                        range_end: Vec::new(),
                    }],
                    success: vec![RequestOp {
                        request: Some(Request::RequestPut(PutRequest {
                            key: kb,
                            value: to.to_string().into_bytes(),
                            ..Default::default()
                        })),
                    }],
                    failure: Vec::new(),
                }),
            )
            .await;
            match r {
                Ok(resp) => (
                    Op::Cas {
                        key,
                        from,
                        to,
                        succeeded: Some(resp.succeeded),
                    },
                    Ok(()),
                ),
                Err(f) => (
                    Op::Cas {
                        key,
                        from,
                        to,
                        succeeded: None,
                    },
                    Err(f),
                ),
            }
        };
        if res.is_err() {
            conn.failed();
        }
        record(&ctx, worker, node, invoke, op, res);
        if !think(&mut rng, 0..15, &ctx.stop).await {
            break;
        }
    }
}

/// Sets: each add puts a key of its own (`jepsen/set/<element>`).
async fn set_worker(ctx: Ctx, worker: u32) {
    let mut conn = Conn::new(&ctx, worker);
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ 0x7365_7400 ^ worker as u64);
    let mut n: u64 = 0;
    while !ctx.stop.is_cancelled() {
        let element = ((worker as u64) << 32) | n;
        n += 1;
        let node = conn.node();
        let mut kv = KvClient::new(conn.chan());
        let invoke = ctx.clock.now();
        let r = call(
            ctx.op_timeout,
            kv.put(PutRequest {
                key: format!("{SET_PREFIX}{element}").into_bytes(),
                value: b"1".to_vec(),
                ..Default::default()
            }),
        )
        .await
        .map(|_| ());
        if r.is_err() {
            conn.failed();
        }
        record(&ctx, worker, node, invoke, Op::Add { element }, r);
        if !think(&mut rng, 0..20, &ctx.stop).await {
            break;
        }
    }
}

/// The final read of the set, retried until it succeeds or `deadline` passes.
pub async fn set_final_read(ctx: &Ctx, deadline: Duration) {
    let worker = 900;
    let mut conn = Conn::new(ctx, worker);
    let start = ctx.clock.now();
    loop {
        let node = conn.node();
        let mut kv = KvClient::new(conn.chan()).max_decoding_message_size(256 << 20);
        let invoke = ctx.clock.now();
        let r = call(
            Duration::from_secs(10),
            kv.range(RangeRequest {
                key: SET_PREFIX.as_bytes().to_vec(),
                range_end: prefix_end(SET_PREFIX.as_bytes()),
                keys_only: true,
                ..Default::default()
            }),
        )
        .await;
        match r {
            Ok(resp) => {
                let elements = resp
                    .kvs
                    .iter()
                    .filter_map(|kv| {
                        String::from_utf8_lossy(&kv.key[SET_PREFIX.len()..])
                            .parse()
                            .ok()
                    })
                    .collect();
                record(
                    ctx,
                    worker,
                    node,
                    invoke,
                    Op::SetRead {
                        elements: Some(elements),
                    },
                    Ok(()),
                );
                return;
            }
            Err(f) => {
                conn.failed();
                record(
                    ctx,
                    worker,
                    node,
                    invoke,
                    Op::SetRead { elements: None },
                    Err(f),
                );
                if ctx.clock.now() - start > deadline.as_micros() as u64 || ctx.abort.is_cancelled()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Watch writers: unique values under the watched prefix, a few keys.
async fn watch_writer(ctx: Ctx, worker: u32) {
    let mut conn = Conn::new(&ctx, worker);
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ 0x7761_7400 ^ worker as u64);
    let mut n: u64 = 0;
    while !ctx.stop.is_cancelled() {
        let key = format!("{WATCH_PREFIX}k{}", rng.gen_range(0..4));
        let value = format!("{worker}-{n}");
        n += 1;
        let node = conn.node();
        let mut kv = KvClient::new(conn.chan());
        let invoke = ctx.clock.now();
        let r = call(
            ctx.op_timeout,
            kv.put(PutRequest {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
                ..Default::default()
            }),
        )
        .await;
        let revision = r
            .as_ref()
            .ok()
            .and_then(|p| p.header.as_ref().map(|h| h.revision));
        if r.is_err() {
            conn.failed();
        }
        record(
            &ctx,
            worker,
            node,
            invoke,
            Op::WatchPut {
                key,
                value,
                revision,
            },
            r.map(|_| ()),
        );
        if !think(&mut rng, 5..25, &ctx.stop).await {
            break;
        }
    }
}

/// The current revision (a linearizable read of the watched prefix).
pub async fn current_revision(ctx: &Ctx, deadline: Duration) -> anyhow::Result<i64> {
    let mut conn = Conn::new(ctx, 901);
    let start = ctx.clock.now();
    loop {
        let mut kv = KvClient::new(conn.chan());
        let r = call(
            ctx.op_timeout,
            kv.range(RangeRequest {
                key: WATCH_PREFIX.as_bytes().to_vec(),
                range_end: prefix_end(WATCH_PREFIX.as_bytes()),
                count_only: true,
                ..Default::default()
            }),
        )
        .await;
        match r {
            Ok(resp) => return Ok(resp.header.map(|h| h.revision).unwrap_or(0)),
            Err(f) => {
                conn.failed();
                if ctx.clock.now() - start > deadline.as_micros() as u64 {
                    anyhow::bail!("no revision: {}", f.error);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A watcher: watches the prefix from `start`, records every event, and on a
/// broken or silent stream resumes on another master from the revision after
/// the last event it saw. Returns once it has seen revision `target`
/// (when set), or when aborted.
async fn watcher(
    ctx: Ctx,
    id: u32,
    start: i64,
    mut target: tokio::sync::watch::Receiver<Option<i64>>,
) {
    let worker = 500 + id;
    let mut conn = Conn::new(&ctx, worker);
    let mut next = start;
    let silence = Duration::from_secs(3);
    let reached = |next: i64, t: &Option<i64>| t.is_some_and(|t| next > t);
    let mut target_open = true;
    'outer: loop {
        if ctx.abort.is_cancelled() || reached(next, &target.borrow()) {
            return;
        }
        let node = conn.node();
        let now = ctx.clock.now();
        ctx.rec.record(Entry {
            node: Some(node.clone()),
            ..Entry::ok(
                worker,
                now,
                now,
                Op::WatchOpen {
                    watcher: id,
                    from_revision: next,
                },
            )
        });
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let _ = tx
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: WATCH_PREFIX.as_bytes().to_vec(),
                    range_end: prefix_end(WATCH_PREFIX.as_bytes()),
                    start_revision: next,
                    ..Default::default()
                })),
            })
            .await;
        let mut client = WatchClient::new(conn.chan());
        let opened = tokio::time::timeout(ctx.op_timeout, client.watch(request_stream(rx))).await;
        let mut stream = match opened {
            Ok(Ok(s)) => s.into_inner(),
            _ => {
                conn.failed();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                _ = ctx.abort.cancelled() => return,
                changed = target.changed(), if target_open => {
                    target_open = changed.is_ok();
                    if reached(next, &target.borrow()) {
                        return;
                    }
                    continue;
                }
                m = tokio::time::timeout(silence, stream.message()) => m,
            };
            match msg {
                Ok(Ok(Some(resp))) => {
                    let now = ctx.clock.now();
                    for ev in &resp.events {
                        let Some(kv) = &ev.kv else { continue };
                        ctx.rec.record(Entry {
                            node: Some(node.clone()),
                            ..Entry::ok(
                                worker,
                                now,
                                now,
                                Op::WatchEvent {
                                    watcher: id,
                                    revision: kv.mod_revision,
                                    key: String::from_utf8_lossy(&kv.key).into_owned(),
                                    value: String::from_utf8_lossy(&kv.value).into_owned(),
                                    delete: ev.r#type == 1,
                                },
                            )
                        });
                        next = next.max(kv.mod_revision + 1);
                    }
                    ctx.watch_floor.set(id, next);
                    if resp.canceled || resp.compact_revision > 0 {
                        tracing::warn!(
                            "watcher {id}: watch canceled on {node} ({}; compact revision {})",
                            resp.cancel_reason,
                            resp.compact_revision
                        );
                        conn.failed();
                        continue 'outer;
                    }
                    if reached(next, &target.borrow()) {
                        return;
                    }
                }
                // Broken, ended or silent stream: resume elsewhere.
                _ => {
                    conn.failed();
                    drop(tx);
                    continue 'outer;
                }
            }
        }
    }
}

/// The request stream of a watch: the receiver of a channel, kept open
/// while the sender lives.
fn request_stream(
    rx: tokio::sync::mpsc::Receiver<WatchRequest>,
) -> impl futures::Stream<Item = WatchRequest> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
}

/// Leases: grant (TTL 2-4 s), put a key attached to it, keep it alive and
/// read the key for a while, then revoke it or let it expire while reading.
async fn lease_worker(ctx: Ctx, worker: u32) {
    let mut conn = Conn::new(&ctx, worker);
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ 0x6c65_6100 ^ worker as u64);
    let mut n = 0u64;
    let stop = ctx.stop.clone();
    while !stop.is_cancelled() {
        n += 1;
        let ttl: i64 = rng.gen_range(2..=4);
        // Grant.
        let node = conn.node();
        let invoke = ctx.clock.now();
        let r = call(
            ctx.op_timeout,
            LeaseClient::new(conn.chan()).lease_grant(LeaseGrantRequest { ttl, id: 0 }),
        )
        .await;
        let (lease, granted) = match &r {
            Ok(g) if g.error.is_empty() => (g.id, g.ttl),
            _ => {
                conn.failed();
                record(
                    &ctx,
                    worker,
                    node,
                    invoke,
                    Op::LeaseGrant {
                        lease: None,
                        ttl: None,
                    },
                    r.map(|_| ()).and(Err(Failure {
                        status: Status::Info,
                        error: "grant failed".into(),
                    })),
                );
                think(&mut rng, 100..300, &stop).await;
                continue;
            }
        };
        record(
            &ctx,
            worker,
            node,
            invoke,
            Op::LeaseGrant {
                lease: Some(lease),
                ttl: Some(granted),
            },
            Ok(()),
        );
        let key = format!("{LEASE_PREFIX}{worker}-{n}");
        // Put the key on the lease.
        let node = conn.node();
        let invoke = ctx.clock.now();
        let r = call(
            ctx.op_timeout,
            KvClient::new(conn.chan()).put(PutRequest {
                key: key.clone().into_bytes(),
                value: b"x".to_vec(),
                lease,
                ..Default::default()
            }),
        )
        .await
        .map(|_| ());
        let put_ok = r.is_ok();
        if !put_ok {
            conn.failed();
        }
        record(
            &ctx,
            worker,
            node,
            invoke,
            Op::LeasePut {
                key: key.clone(),
                lease,
            },
            r,
        );
        if !put_ok {
            continue;
        }
        // Keep alive and read for a few rounds.
        for _ in 0..rng.gen_range(1..6) {
            if !think(&mut rng, 300..700, &stop).await {
                break;
            }
            keepalive(&ctx, &mut conn, worker, lease).await;
            lease_read(&ctx, &mut conn, worker, lease, &key).await;
        }
        if rng.gen_bool(0.5) {
            let node = conn.node();
            let invoke = ctx.clock.now();
            let r = call(
                ctx.op_timeout,
                LeaseClient::new(conn.chan()).lease_revoke(LeaseRevokeRequest { id: lease }),
            )
            .await
            .map(|_| ());
            if r.is_err() {
                conn.failed();
            }
            record(&ctx, worker, node, invoke, Op::LeaseRevoke { lease }, r);
            lease_read(&ctx, &mut conn, worker, lease, &key).await;
        } else {
            // Stop renewing; read until the key is gone, or until well
            // past the point where it is late (the checker's late-expiry
            // bound: two TTLs and 2 s after the last renewal).
            let give_up = ctx.clock.now()
                + (checker::lease::LATE_SLACK_TTLS * granted.max(0) as u64 + 4) * 1_000_000;
            while ctx.clock.now() < give_up && !ctx.abort.is_cancelled() {
                if lease_read(&ctx, &mut conn, worker, lease, &key).await == Some(false) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(rng.gen_range(150..400))).await;
            }
        }
    }
}

async fn keepalive(ctx: &Ctx, conn: &mut Conn, worker: u32, lease: i64) {
    let node = conn.node();
    let invoke = ctx.clock.now();
    let mut client = LeaseClient::new(conn.chan());
    // The request stream stays open until the answer is in.
    let reqs = futures::stream::iter([LeaseKeepAliveRequest { id: lease }])
        .chain(futures::stream::pending());
    let res = tokio::time::timeout(ctx.op_timeout, async {
        let mut s = client.lease_keep_alive(reqs).await?.into_inner();
        match s.message().await? {
            Some(r) => Ok(r.ttl),
            None => Err(tonic::Status::unavailable("keep-alive stream ended")),
        }
    })
    .await;
    let (ttl, r) = match res {
        Ok(Ok(ttl)) => (Some(ttl), Ok(())),
        Ok(Err(s)) => (
            None,
            Err(Failure {
                status: Status::Info,
                error: format!("{:?}: {}", s.code(), s.message()),
            }),
        ),
        Err(_) => (
            None,
            Err(Failure {
                status: Status::Info,
                error: "timeout".into(),
            }),
        ),
    };
    if r.is_err() {
        conn.failed();
    }
    record(
        ctx,
        worker,
        node,
        invoke,
        Op::LeaseKeepAlive { lease, ttl },
        r,
    );
}

/// Reads the lease's key; returns whether it is there (None: no answer).
async fn lease_read(
    ctx: &Ctx,
    conn: &mut Conn,
    worker: u32,
    lease: i64,
    key: &str,
) -> Option<bool> {
    let node = conn.node();
    let invoke = ctx.clock.now();
    let r = call(
        ctx.op_timeout,
        KvClient::new(conn.chan()).range(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }),
    )
    .await;
    let present = r.as_ref().ok().map(|resp| !resp.kvs.is_empty());
    if r.is_err() {
        conn.failed();
    }
    record(
        ctx,
        worker,
        node,
        invoke,
        Op::LeaseRead {
            key: key.to_string(),
            lease,
            present,
        },
        r.map(|_| ()),
    );
    present
}

/// The running workers.
pub struct Running {
    pub tasks: JoinSet<()>,
    pub watchers: JoinSet<()>,
    pub watch_target: Option<tokio::sync::watch::Sender<Option<i64>>>,
    /// The objects workload's counter watchers' target (the final value).
    pub objects_target: Option<tokio::sync::watch::Sender<Option<i64>>>,
}

/// Starts the named workloads. `watch_start` is the revision the watchers
/// start from (needed when `watch` is among them).
pub fn start(ctx: &Ctx, workloads: &[String], watch_start: i64) -> Running {
    let mut tasks = JoinSet::new();
    let mut watchers = JoinSet::new();
    let mut watch_target = None;
    let mut objects_target = None;
    for w in workloads {
        match w.as_str() {
            "register" => {
                let groups = REGISTER_WORKERS.div_ceil(REGISTER_GROUP);
                let counters: Vec<Arc<AtomicU64>> =
                    (0..groups).map(|_| Arc::new(AtomicU64::new(0))).collect();
                for i in 0..REGISTER_WORKERS {
                    let g = i / REGISTER_GROUP;
                    tasks.spawn(register_worker(
                        ctx.clone(),
                        i,
                        counters[g as usize].clone(),
                        g,
                    ));
                }
            }
            "set" => {
                for i in 0..SET_WORKERS {
                    tasks.spawn(set_worker(ctx.clone(), 100 + i));
                }
            }
            "watch" => {
                for i in 0..WATCH_WRITERS {
                    tasks.spawn(watch_writer(ctx.clone(), 200 + i));
                }
                let (tx, rx) = tokio::sync::watch::channel(None);
                for i in 0..WATCHERS {
                    ctx.watch_floor.set(i, watch_start);
                    watchers.spawn(watcher(ctx.clone(), i, watch_start, rx.clone()));
                }
                watch_target = Some(tx);
            }
            "lease" => {
                for i in 0..LEASE_WORKERS {
                    tasks.spawn(lease_worker(ctx.clone(), 300 + i));
                }
            }
            "objects" => {
                objects_target = Some(crate::objects::start(ctx, &mut tasks, &mut watchers));
            }
            other => tracing::warn!("unknown workload {other}"),
        }
    }
    Running {
        tasks,
        watchers,
        watch_target,
        objects_target,
    }
}
