//! The objects workload: clients of the object API (through
//! `flotilla-client`, one master at a time, moving on after a failure).
//!
//! - Registers: ConfigMaps `jr-N` whose `data.v` is read (Get, linearizable)
//!   and written (Apply) by groups of workers; checked for linearizability
//!   with the register checker (keys `objects/jr-N`).
//! - A counter: ConfigMap `jepsen-counter`, incremented by read-modify-write
//!   with the read's resourceVersion as precondition (retried on Conflict):
//!   the final value must count every acknowledged increment (no lost
//!   update) and nothing that was never attempted.
//! - Counter watchers: watch the counter, resume from the last
//!   resourceVersion seen on another master after a failure (relist after
//!   Gone): every increment must be seen, in order, exactly once.
//! - Creates with `generateName` by a retrying client: each ConfigMap
//!   carries the token of its create; the final list must hold every
//!   acknowledged token, and no token twice (a retried create that had
//!   committed must not make a second object).
//!
//! Half of the register workers and one counter worker use the client as
//! users do: one client that knows every master and retries a call that
//! got no answer on the next master (each attempt with the call's request
//! id, so a write that did commit is answered, not applied again). A retry
//! applied twice shows as a counter above its acknowledged increments or
//! as a register value no linearization explains. The others use one
//! client per master without retries, so that the history says which
//! master answered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flotilla_client::{ApiError, Client, ClientOptions, EventType, Reason, WatchParams};
use futures::StreamExt as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::history::{Entry, Op, Status};
use crate::workload::Ctx;

pub const WORKERS: u32 = 6;
pub const GROUP: u32 = 3;
pub const OPS_PER_KEY: u64 = 120;
pub const COUNTER_WORKERS: u32 = 3;
pub const WATCHERS: u32 = 2;
pub const COUNTER: &str = "jepsen-counter";
/// Label of the ConfigMaps made with generateName.
const CREATED_LABEL: &str = "jepsen-created";
pub const KEY_PREFIX: &str = "objects/";
const NS: &str = "default";

/// One client per master (each knows only that master, and never retries
/// on its own: the history must say which master answered what), or one
/// retrying client that knows them all.
struct Conns {
    nodes: Vec<(String, Client)>,
    cur: usize,
    rng: StdRng,
}

/// The history's node for calls made by a retrying client.
const RETRYING: &str = "any (client retries)";

impl Conns {
    fn new(ctx: &Ctx, worker: u32) -> Conns {
        Self::with_retries(ctx, worker, false)
    }

    /// `retrying`: one client over every master (starting at the worker's
    /// own) that retries unanswered calls for up to the operation timeout,
    /// each attempt bounded by a third of it.
    fn with_retries(ctx: &Ctx, worker: u32, retrying: bool) -> Conns {
        if retrying && !ctx.nodes.is_empty() {
            let opts = ClientOptions {
                connect_timeout: Duration::from_secs(1),
                request_timeout: ctx.op_timeout / 3,
                retry_for: ctx.op_timeout,
                ..Default::default()
            };
            let first = worker as usize % ctx.nodes.len();
            let mut addrs: Vec<String> = ctx.nodes.iter().map(|(_, a)| a.clone()).collect();
            addrs.rotate_left(first);
            let nodes = Client::connect_with(&addrs, opts)
                .ok()
                .map(|c| vec![(RETRYING.to_string(), c)])
                .unwrap_or_default();
            return Conns {
                cur: 0,
                nodes,
                rng: StdRng::seed_from_u64(ctx.seed ^ 0x6f62_6a00 ^ worker as u64),
            };
        }
        let opts = ClientOptions {
            connect_timeout: Duration::from_secs(1),
            request_timeout: ctx.op_timeout,
            retry_for: Duration::ZERO,
            ..Default::default()
        };
        let nodes = ctx
            .nodes
            .iter()
            .filter_map(|(name, addr)| {
                Client::connect_with(std::slice::from_ref(addr), opts.clone())
                    .ok()
                    .map(|c| (name.clone(), c))
            })
            .collect::<Vec<_>>();
        Conns {
            cur: worker as usize % nodes.len().max(1),
            nodes,
            rng: StdRng::seed_from_u64(ctx.seed ^ 0x6f62_6a00 ^ worker as u64),
        }
    }

    fn node(&self) -> String {
        self.nodes[self.cur].0.clone()
    }

    fn client(&self) -> Client {
        self.nodes[self.cur].1.clone()
    }

    fn failed(&mut self) {
        if self.nodes.len() > 1 {
            let other = self.rng.gen_range(0..self.nodes.len() - 1);
            self.cur = if other >= self.cur { other + 1 } else { other };
        }
    }
}

/// How an API error ends an operation: an answer from the server that it
/// refused is a definite failure; no answer (unavailable, timeout, cut
/// connection) is unknown.
fn outcome(e: &ApiError) -> Status {
    match e.reason {
        Reason::Unavailable | Reason::Internal => Status::Info,
        _ => Status::Fail,
    }
}

impl Conns {
    /// [`outcome_of`] for this worker's client.
    fn outcome(&self, e: &ApiError) -> Status {
        let retrying = self.nodes.first().is_some_and(|(n, _)| n == RETRYING);
        outcome_of(e, retrying)
    }
}

/// [`outcome`], except that a refused connection of a client that makes
/// one attempt is a definite failure: the request was never sent (as the
/// etcd workload counts it). A retrying client's last refusal says nothing
/// of its earlier attempts.
fn outcome_of(e: &ApiError, retrying: bool) -> Status {
    if !retrying && e.reason == Reason::Unavailable && crate::workload::never_sent(&e.message) {
        return Status::Fail;
    }
    outcome(e)
}

fn record(
    ctx: &Ctx,
    worker: u32,
    node: String,
    invoke: u64,
    op: Op,
    res: Result<(), (Status, String)>,
) {
    let (status, error) = match res {
        Ok(()) => (Status::Ok, None),
        Err((s, e)) => (s, Some(e)),
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

fn value_of(cm: &Value) -> Option<i64> {
    cm.pointer("/data/v")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

fn config_map(name: &str, v: i64) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS}, "data": {"v": v.to_string()}})
}

async fn think(rng: &mut StdRng, ms: std::ops::Range<u64>, ctx: &Ctx) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(rng.gen_range(ms))) => true,
        _ = ctx.stop.cancelled() => false,
    }
}

/// Registers: reads and writes of `data.v` in 0..5.
async fn register_worker(
    ctx: Ctx,
    worker: u32,
    counter: Arc<AtomicU64>,
    group: u32,
    retrying: bool,
) {
    let groups = WORKERS.div_ceil(GROUP) as u64;
    let mut conns = Conns::with_retries(&ctx, worker, retrying);
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ 0x6f72_6700 ^ worker as u64);
    while !ctx.stop.is_cancelled() {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("jr-{}", group as u64 + groups * (n / OPS_PER_KEY));
        let key = format!("{KEY_PREFIX}{name}");
        let (node, client) = (conns.node(), conns.client());
        let invoke = ctx.clock.now();
        let (op, res) = if rng.gen_bool(0.5) {
            match client.get("configmaps", NS, &name).await {
                Ok(v) => (
                    Op::Read {
                        key,
                        value: value_of(&v),
                    },
                    Ok(()),
                ),
                Err(e) if e.is(Reason::NotFound) => (Op::Read { key, value: None }, Ok(())),
                // A read that got no answer changed nothing.
                Err(e) => (
                    Op::Read { key, value: None },
                    Err((Status::Fail, e.message)),
                ),
            }
        } else {
            let value: i64 = rng.gen_range(0..5);
            let r = client.apply(NS, &config_map(&name, value), false).await;
            (
                Op::Write { key, value },
                r.map(|_| ()).map_err(|e| (conns.outcome(&e), e.message)),
            )
        };
        if res.is_err() {
            conns.failed();
        }
        record(&ctx, worker, node, invoke, op, res);
        if !think(&mut rng, 0..15, &ctx).await {
            break;
        }
    }
}

/// Creates with generateName through a retrying client, each with a token
/// of its own.
async fn creator(ctx: Ctx, worker: u32) {
    let conns = Conns::with_retries(&ctx, worker, true);
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ 0x6372_6500 ^ worker as u64);
    let mut n = 0u64;
    while !ctx.stop.is_cancelled() {
        n += 1;
        let token = format!("{worker}-{n}");
        let (node, client) = (conns.node(), conns.client());
        let invoke = ctx.clock.now();
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"generateName": "jg-", "namespace": NS, "labels": {CREATED_LABEL: "1"}},
            "data": {"token": token}});
        let res = client
            .create("configmaps", NS, &cm, false)
            .await
            .map(|_| ())
            .map_err(|e| (outcome(&e), e.message));
        record(&ctx, worker, node, invoke, Op::ObjCreate { token }, res);
        if !think(&mut rng, 5..30, &ctx).await {
            break;
        }
    }
}

/// The final list of the ConfigMaps made by [`creator`] (after the faults
/// are healed): retried until a master answers.
pub async fn final_created(ctx: &Ctx, deadline: Duration) {
    let conns = Conns::with_retries(ctx, 951, true);
    let start = tokio::time::Instant::now();
    let p = flotilla_client::ListParams {
        label_selector: format!("{CREATED_LABEL}=1"),
        ..Default::default()
    };
    while start.elapsed() < deadline && !ctx.abort.is_cancelled() {
        let (node, client) = (conns.node(), conns.client());
        let invoke = ctx.clock.now();
        match client.list_all("configmaps", NS, &p).await {
            Ok(list) => {
                let tokens = list
                    .items
                    .iter()
                    .filter_map(|c| c.pointer("/data/token").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect();
                record(
                    ctx,
                    951,
                    node,
                    invoke,
                    Op::ObjCreatedList { tokens },
                    Ok(()),
                );
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Create the counter at 0 unless it exists; retried until it is there.
async fn ensure_counter(ctx: &Ctx, conns: &mut Conns) {
    while !ctx.abort.is_cancelled() {
        match conns
            .client()
            .create("configmaps", NS, &config_map(COUNTER, 0), false)
            .await
        {
            Ok(_) => return,
            Err(e) if e.is(Reason::AlreadyExists) => return,
            Err(_) => {
                conns.failed();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Counter increments: Get, then Update with that resourceVersion; a
/// Conflict re-reads and tries again, within one operation.
async fn counter_worker(ctx: Ctx, worker: u32, retrying: bool) {
    let mut conns = Conns::with_retries(&ctx, worker, retrying);
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ 0x696e_6300 ^ worker as u64);
    ensure_counter(&ctx, &mut conns).await;
    while !ctx.stop.is_cancelled() {
        let (node, client) = (conns.node(), conns.client());
        let invoke = ctx.clock.now();
        let deadline = tokio::time::Instant::now() + ctx.op_timeout;
        // Unknown once an update has been sent without a definite answer.
        let mut sent_unknown = false;
        let res: Result<(), (Status, String)> = loop {
            let cur = match client.get("configmaps", NS, COUNTER).await {
                Ok(v) => v,
                Err(e) => {
                    let s = if sent_unknown {
                        Status::Info
                    } else {
                        Status::Fail
                    };
                    break Err((s, format!("read: {}", e.message)));
                }
            };
            let Some(v) = value_of(&cur) else {
                break Err((Status::Fail, "counter has no value".into()));
            };
            let mut next = cur.clone();
            next["data"]["v"] = json!((v + 1).to_string());
            match client.update("configmaps", NS, &next).await {
                Ok(_) => break Ok(()),
                Err(e) if e.is(Reason::Conflict) => {
                    if tokio::time::Instant::now() >= deadline {
                        let s = if sent_unknown {
                            Status::Info
                        } else {
                            Status::Fail
                        };
                        break Err((s, "gave up after conflicts".into()));
                    }
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(1..10))).await;
                }
                Err(e) => {
                    let s = conns.outcome(&e);
                    if s == Status::Info {
                        sent_unknown = true;
                    }
                    break Err((if sent_unknown { Status::Info } else { s }, e.message));
                }
            }
        };
        if res.is_err() {
            conns.failed();
        }
        record(
            &ctx,
            worker,
            node,
            invoke,
            Op::ObjInc {
                counter: COUNTER.into(),
            },
            res,
        );
        if !think(&mut rng, 0..20, &ctx).await {
            break;
        }
    }
}

/// The final read of the counter (after the faults are healed): retried
/// until a master answers.
pub async fn final_read(ctx: &Ctx, deadline: Duration) -> Option<i64> {
    let mut conns = Conns::new(ctx, 950);
    let start = tokio::time::Instant::now();
    while start.elapsed() < deadline && !ctx.abort.is_cancelled() {
        let (node, client) = (conns.node(), conns.client());
        let invoke = ctx.clock.now();
        match client.get("configmaps", NS, COUNTER).await {
            Ok(v) => {
                let value = value_of(&v);
                record(
                    ctx,
                    950,
                    node,
                    invoke,
                    Op::ObjCounterRead {
                        counter: COUNTER.into(),
                        value,
                    },
                    Ok(()),
                );
                return value;
            }
            Err(e) => {
                record(
                    ctx,
                    950,
                    node,
                    invoke,
                    Op::ObjCounterRead {
                        counter: COUNTER.into(),
                        value: None,
                    },
                    Err((Status::Fail, e.message)),
                );
                conns.failed();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    None
}

/// A counter watcher: records every value it is shown; resumes from the
/// last resourceVersion on another master when its stream breaks or goes
/// silent, relists after Gone. Ends once it has seen `target` (when set).
async fn watcher(ctx: Ctx, id: u32, mut target: tokio::sync::watch::Receiver<Option<i64>>) {
    let worker = 600 + id;
    let mut conns = Conns::new(&ctx, worker);
    let mut rv = String::new();
    let mut last: Option<i64> = None;
    let silence = Duration::from_secs(3);
    let reached =
        |last: Option<i64>, t: &Option<i64>| matches!((last, t), (Some(l), Some(t)) if l >= *t);
    let mut target_open = true;
    'outer: loop {
        if ctx.abort.is_cancelled() || reached(last, &target.borrow()) {
            return;
        }
        let node = conns.node();
        let now = ctx.clock.now();
        ctx.rec.record(Entry {
            node: Some(node.clone()),
            ..Entry::ok(
                worker,
                now,
                now,
                Op::ObjWatchOpen {
                    watcher: id,
                    from: rv.clone(),
                },
            )
        });
        let p = WatchParams {
            field_selector: format!("metadata.name={COUNTER}"),
            resource_version: rv.clone(),
            ..Default::default()
        };
        let mut stream =
            match tokio::time::timeout(ctx.op_timeout, conns.client().watch("configmaps", NS, &p))
                .await
            {
                Ok(Ok(s)) => s,
                _ => {
                    conns.failed();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
        loop {
            let item = tokio::select! {
                _ = ctx.abort.cancelled() => return,
                changed = target.changed(), if target_open => {
                    target_open = changed.is_ok();
                    if reached(last, &target.borrow()) {
                        return;
                    }
                    continue;
                }
                m = tokio::time::timeout(silence, stream.next()) => m,
            };
            match item {
                Ok(Some(Ok(ev))) => {
                    if ev.kind == EventType::Bookmark {
                        continue;
                    }
                    let revision: i64 = ev
                        .object
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    if let Some(v) = value_of(&ev.object) {
                        let now = ctx.clock.now();
                        ctx.rec.record(Entry {
                            node: Some(node.clone()),
                            ..Entry::ok(
                                worker,
                                now,
                                now,
                                Op::ObjCounterSeen {
                                    watcher: id,
                                    value: v,
                                    revision,
                                },
                            )
                        });
                        last = Some(v);
                    }
                    rv = revision.to_string();
                    if reached(last, &target.borrow()) {
                        return;
                    }
                }
                Ok(Some(Err(e))) if e.is(Reason::Gone) => {
                    tracing::warn!("objects watcher {id}: {} on {node}; relisting", e.message);
                    rv.clear();
                    conns.failed();
                    continue 'outer;
                }
                _ => {
                    conns.failed();
                    continue 'outer;
                }
            }
        }
    }
}

/// Start the workload's workers (into `tasks`) and watchers (into
/// `watchers`); returns the sender of the watchers' target value.
pub fn start(
    ctx: &Ctx,
    tasks: &mut tokio::task::JoinSet<()>,
    watchers: &mut tokio::task::JoinSet<()>,
) -> tokio::sync::watch::Sender<Option<i64>> {
    let groups = WORKERS.div_ceil(GROUP);
    let counters: Vec<Arc<AtomicU64>> = (0..groups).map(|_| Arc::new(AtomicU64::new(0))).collect();
    for i in 0..WORKERS {
        let g = i / GROUP;
        tasks.spawn(register_worker(
            ctx.clone(),
            700 + i,
            counters[g as usize].clone(),
            g,
            i % 2 == 1,
        ));
    }
    for i in 0..COUNTER_WORKERS {
        tasks.spawn(counter_worker(ctx.clone(), 800 + i, i == 0));
    }
    tasks.spawn(creator(ctx.clone(), 900));
    let (tx, rx) = tokio::sync::watch::channel(None);
    for i in 0..WATCHERS {
        watchers.spawn(watcher(ctx.clone(), i, rx.clone()));
    }
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_a_failure_only_for_a_single_attempt() {
        let refused = ApiError::new(
            Reason::Unavailable,
            "master 10.0.0.1:2379 unavailable: tcp connect error",
        );
        assert_eq!(outcome_of(&refused, false), Status::Fail);
        // A retrying client may have sent an earlier attempt.
        assert_eq!(outcome_of(&refused, true), Status::Info);
        // A cut connection or a timeout: the request may have been applied.
        let cut = ApiError::new(
            Reason::Unavailable,
            "master 10.0.0.1:2379 unavailable: connection reset",
        );
        assert_eq!(outcome_of(&cut, false), Status::Info);
        let refused_by_server = ApiError::new(Reason::Conflict, "tcp connect error");
        assert_eq!(outcome_of(&refused_by_server, false), Status::Fail);
    }
}
