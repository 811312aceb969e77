//! Properties of the etcd API over requests no one wrote by hand. Random but
//! structured Range, Put, DeleteRange, Txn (nested; every compare target and
//! result; enum values no enum has), Compact, lease, maintenance and cluster
//! requests, and protobuf bytes mutated at random, are each answered or
//! refused with a deliberate status: never a panic, `Unknown` or `Internal`,
//! and no header older than one before. Watch and keep-alive streams answer
//! every request and deliver only what a watch asked for. Reads at every
//! revision agree with a small model after random writes. Each test starts
//! one single-master store and calls its services over loopback gRPC.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, Once};
use std::time::Duration;

use flotilla_proto::etcdserverpb as pb;
use flotilla_proto::mvccpb;
use flotilla_raftstore::{Master, MasterConfig, RunningMaster};
use pb::compare::TargetUnion as U;
use pb::response_op::Response as Rsp;
use pb::{cluster_client::ClusterClient, kv_client::KvClient, lease_client::LeaseClient};
use pb::{maintenance_client::MaintenanceClient, request_op::Request as R};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

/// Panics anywhere in the process: in a handler, or in a task it spawned.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn fail<T>(msg: String) -> Result<T, TestCaseError> {
    Err(TestCaseError::fail(msg))
}

/// Every etcd response names the revision it answers at.
trait Headed {
    fn header(&self) -> Option<&pb::ResponseHeader>;
}
macro_rules! headed {
    ($($t:ident),*) => {$(impl Headed for pb::$t {
        fn header(&self) -> Option<&pb::ResponseHeader> { self.header.as_ref() }
    })*};
}
headed!(
    RangeResponse,
    PutResponse,
    DeleteRangeResponse,
    TxnResponse,
    CompactionResponse
);
headed!(
    LeaseGrantResponse,
    LeaseRevokeResponse,
    LeaseTimeToLiveResponse,
    LeaseLeasesResponse
);
headed!(
    StatusResponse,
    AlarmResponse,
    HashKvResponse,
    MoveLeaderResponse
);
headed!(
    MemberListResponse,
    MemberRemoveResponse,
    MemberAddResponse,
    MemberUpdateResponse
);
headed!(MemberPromoteResponse);

/// One single-master store and clients of its services, shared by a
/// test's cases.
struct Fx {
    rt: tokio::runtime::Runtime,
    running: Option<RunningMaster>,
    m: Master,
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    maint: MaintenanceClient<Channel>,
    cluster: ClusterClient<Channel>,
    channel: Channel,
    /// The highest header revision answered so far.
    seen: AtomicI64,
    granted: Mutex<Vec<i64>>,
    /// Answers by call and code, printed after a run.
    stats: Mutex<BTreeMap<String, usize>>,
    _dir: tempfile::TempDir,
}

/// A port below the kernel's ephemeral range, reserved for this process
/// (`flotilla_testkit::ports`): no outgoing connection can take it before
/// the master binds it.
fn free_addr() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], flotilla_testkit::ports::free_port()))
}

impl Fx {
    fn start() -> Fx {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                PANICS.fetch_add(1, SeqCst);
                prev(info)
            }));
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = MasterConfig::new("m0", dir.path().join("m0"), free_addr(), free_addr());
        cfg.initial_cluster = vec![("m0".into(), cfg.peer_addr.to_string())];
        let url = format!("http://{}", cfg.client_addr);
        let (running, channel) = rt.block_on(async {
            let running = flotilla_raftstore::start(cfg).await.expect("start");
            assert!(running.master.wait_ready(Duration::from_secs(30)).await);
            let ep = tonic::transport::Endpoint::from_shared(url).expect("url");
            for _ in 0..200 {
                if let Ok(c) = ep.connect().await {
                    return (running, c);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the client port never listened");
        });
        let m = running.master.clone();
        Fx {
            rt,
            // Answers are the master's to bound, not the client's: a range
            // of values near the request limit is larger than tonic's default.
            kv: KvClient::new(channel.clone()).max_decoding_message_size(usize::MAX),
            lease: LeaseClient::new(channel.clone()),
            maint: MaintenanceClient::new(channel.clone()),
            cluster: ClusterClient::new(channel.clone()),
            seen: AtomicI64::new(m.revision()),
            m,
            running: Some(running),
            channel,
            granted: Mutex::default(),
            stats: Mutex::default(),
            _dir: dir,
        }
    }

    /// Run a handler on the runtime: its answer, unless it panicked, hung,
    /// or answered with a header missing or older than one answered before.
    async fn call<T, F>(&self, what: &str, f: F) -> Result<Result<T, Status>, TestCaseError>
    where
        T: Headed + Send + 'static,
        F: Future<Output = Result<Response<T>, Status>> + Send + 'static,
    {
        let before = PANICS.load(SeqCst);
        let r = match tokio::time::timeout(Duration::from_secs(30), tokio::spawn(f)).await {
            Err(_) => return fail(format!("{what}: no answer in 30 s")),
            Ok(Err(e)) => return fail(format!("{what}: the handler failed: {e}")),
            Ok(Ok(r)) => r.map(Response::into_inner),
        };
        prop_assert_eq!(PANICS.load(SeqCst), before, "{}: a panic meanwhile", what);
        let code = r.as_ref().err().map_or(Code::Ok, Status::code);
        *self
            .stats
            .lock()
            .unwrap()
            .entry(format!("{what} {code:?}"))
            .or_default() += 1;
        if let Ok(resp) = &r {
            let Some(h) = resp.header() else {
                return fail(format!("{what}: an answer without a header"));
            };
            let seen = self.seen.fetch_max(h.revision, SeqCst);
            prop_assert!(
                h.revision >= seen,
                "{what}: header at {} after {seen}",
                h.revision
            );
        }
        Ok(r)
    }

    /// [`Fx::call`], where a refusal must be a deliberate one.
    async fn answer<T, F>(&self, what: &str, f: F) -> Result<Option<T>, TestCaseError>
    where
        T: Headed + Send + 'static,
        F: Future<Output = Result<Response<T>, Status>> + Send + 'static,
    {
        match self.call(what, f).await? {
            Ok(r) => Ok(Some(r)),
            Err(s) if deliberate(s.code()) => Ok(None),
            Err(s) => fail(format!("{what}: {:?}: {}", s.code(), s.message())),
        }
    }

    fn rev(&self, r: Rev) -> i64 {
        match r {
            Rev::Abs(v) => v,
            Rev::Latest(d) => self.m.revision().saturating_add(d),
            Rev::Compacted(d) => self.m.compact_revision().saturating_add(d),
        }
    }

    fn lease_id(&self, l: LeaseSel) -> i64 {
        let g = self.granted.lock().unwrap();
        match l {
            LeaseSel::Fixed(id) => id,
            LeaseSel::Granted(_) if g.is_empty() => 0,
            LeaseSel::Granted(i) => g[i.index(g.len())],
        }
    }

    fn check<S: Strategy>(&self, n: u32, s: S, f: impl Fn(S::Value) -> Result<(), TestCaseError>) {
        let started = std::time::Instant::now();
        let config = Config {
            failure_persistence: None,
            ..Config::with_cases(n)
        };
        if let Err(e) = TestRunner::new(config).run(&s, f) {
            panic!("{e}");
        }
        assert_eq!(PANICS.load(SeqCst), 0, "a panic in the master");
        let t = started.elapsed();
        eprintln!("{n} cases in {t:?}: {:?}", self.stats.lock().unwrap());
    }
}

impl Drop for Fx {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.shutdown());
        }
    }
}

/// `ask!(fx, service.method(request))`: [`Fx::answer`] of one call.
macro_rules! ask {
    ($fx:expr, $svc:ident . $m:ident ($req:expr)) => {{
        let (mut s, r) = ($fx.$svc.clone(), $req);
        $fx.answer(stringify!($m), async move { s.$m(Request::new(r)).await })
            .await?
    }};
}

/// The codes of refusals (see the crate's `error.rs`): the request was
/// wrong or asked for what cannot be; not a failure of the master.
fn deliberate(c: Code) -> bool {
    use Code::*;
    matches!(
        c,
        InvalidArgument
            | OutOfRange
            | NotFound
            | FailedPrecondition
            | ResourceExhausted
            | Unimplemented
            | AlreadyExists
    )
}

/// Whether `k` is in etcd's range from `start` to `end`.
fn in_range(k: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => k == start,
        [0] => k >= start,
        _ => k >= start && k < end,
    }
}

/// A failed case, saying what went wrong.
fn bad(e: impl std::fmt::Debug) -> TestCaseError {
    TestCaseError::fail(format!("{e:?}"))
}

mod model;
mod requests;
mod strategies;
mod streams;

use strategies::{LeaseSel, Rev};
