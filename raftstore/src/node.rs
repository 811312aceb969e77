//! A running master: the Raft instance, its store, and the duties that sit
//! between the gRPC services and Raft (forwarding writes to the leader,
//! linearizable read barriers, lease expiry, automatic compaction).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_proto::etcdserverpb::ResponseHeader;
use flotilla_proto::raft::{LeaseRequest, ReadIndexRequest};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::engine;
use crate::error::{Error, Result};
use crate::kv::Limits;
use crate::lease::{Lessor, Renewal};
use crate::log_store::{InstallGate, LogStore};
use crate::mvcc::KvStore;
use crate::network::{self, NetworkFactory, PeerChannels};
use crate::state_machine::{Listeners, StateMachine};
use crate::types::{
    node_id_from_name, Command, CommandResult, MasterNode, MemberAddrs, NodeId, Outcome, Raft,
};
use crate::watch::WatchHub;

mod access;
mod batcher;
mod forward;
mod leadership;
mod leases;
mod link;
mod membership;
mod reads;
mod request_ids;
mod settle;
mod transfer;
mod triggers;

pub use access::AppliesHeld;
pub use transfer::TransferError;

use batcher::{command_size, proposer_loop, Batches, Proposal};
use forward::{forward_loop, Forward};
use reads::{ReadWaiter, RemoteRead};
use settle::settle;

/// Everything `flotilla master` is told on its command line.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    /// `(name, peer address)` of every founding master; empty when joining.
    pub initial_cluster: Vec<(String, String)>,
    /// Client addresses of running masters to ask for admission.
    pub join: Vec<String>,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    /// Log entries between snapshots.
    pub snapshot_logs: u64,
    /// Log bytes written since the last snapshot that also call for a
    /// snapshot, or the last snapshot's size if that is larger (see
    /// [`crate::log_store::LogBytes`]; 0: by entries only).
    pub snapshot_log_bytes: u64,
    /// Revisions kept by automatic compaction; 0 turns it off.
    pub auto_compaction_retention: i64,
    pub limits: Limits,
    /// TLS on the ports and who may use the etcd API.
    pub security: crate::transport::TransportSecurity,
    /// Where this master's series go (served on the client port's
    /// `/metrics`, and on `--metrics-addr`).
    pub metrics: flotilla_telemetry::prometheus::Registry,
    /// Skip the fsyncs that make the Raft log and the vote durable (etcd's
    /// `--unsafe-no-fsync`). Only for tests: a power loss on every master
    /// then loses acknowledged writes, which the chaos tests' power-loss
    /// nemesis shows.
    pub unsafe_no_fsync: bool,
    /// Serve AppendEntries streams to the leader, and leader streams to
    /// followers. False only in tests: a master from before the streams, to
    /// which a leader sends a call per AppendEntries and a follower a call
    /// per forward.
    pub serve_peer_streams: bool,
}

impl MasterConfig {
    pub fn new(
        name: &str,
        data_dir: PathBuf,
        client_addr: SocketAddr,
        peer_addr: SocketAddr,
    ) -> Self {
        MasterConfig {
            name: name.to_string(),
            data_dir,
            client_addr,
            peer_addr,
            initial_cluster: vec![],
            join: vec![],
            heartbeat_interval_ms: 100,
            election_timeout_ms: 300,
            snapshot_logs: 10_000,
            snapshot_log_bytes: 64 << 20,
            auto_compaction_retention: 10_000,
            limits: Limits::default(),
            security: Default::default(),
            metrics: flotilla_telemetry::registry(),
            unsafe_no_fsync: false,
            serve_peer_streams: true,
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.name.is_empty() {
            return Err("--name must not be empty".into());
        }
        if self.initial_cluster.is_empty()
            && self.join.is_empty()
            && !self.data_dir.join("db").exists()
        {
            return Err("a new master needs --initial-cluster (to found a cluster) or --join (to enter one)".into());
        }
        if !self.initial_cluster.is_empty()
            && !self.initial_cluster.iter().any(|(n, _)| n == &self.name)
        {
            return Err(format!(
                "--initial-cluster does not name this master ({})",
                self.name
            ));
        }
        let mut seen = HashSet::new();
        for (n, _) in &self.initial_cluster {
            if !seen.insert(n) {
                return Err(format!("--initial-cluster names {n} twice"));
            }
        }
        if self.heartbeat_interval_ms == 0
            || self.election_timeout_ms < 3 * self.heartbeat_interval_ms
        {
            return Err(format!(
                "--election-timeout-ms ({}) must be at least three times --heartbeat-interval-ms ({})",
                self.election_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        Ok(())
    }
}

/// Fsync the data folder (holding db/ and snapshots/) and its parent
/// (holding the data folder), so that the entries created on a first start
/// are durable.
fn sync_dirs(data_dir: &std::path::Path) -> std::io::Result<()> {
    let abs = std::path::absolute(data_dir)?;
    std::fs::File::open(&abs)?.sync_all()?;
    if let Some(parent) = abs.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// openraft's `(election_timeout_min, election_timeout_max)` for an
/// election timeout of `e` ms.
///
/// openraft's own election timer is off: [`crate::election`] decides when
/// to stand, after `e` to `1.2 e` of silence and a Pre-Vote. What remains
/// of these two is openraft's leader lease (`election_timeout_max`): a
/// voter refuses any candidate for that long after hearing from its leader.
/// It must be shorter than `e`, so that a candidacy after `e` of silence can
/// win, and `min` must stay above one heartbeat (openraft checks). Passing
/// `e` straight through, as before, made a failover take 2.5-3 `e`: the
/// lease plus the timer, one after the other. Safety does not depend on
/// it: reads are confirmed by a quorum (read index), never by a clock.
fn openraft_election(e: u64) -> (u64, u64) {
    (e * 2 / 5, e * 3 / 5)
}

/// What a [`Master`] handle shares. Public in name only (for `Deref`):
/// outside this crate it cannot be named and has no field or method to
/// reach; [`Master`]'s methods are the interface.
pub struct MasterInner {
    pub(crate) id: NodeId,
    pub(crate) cfg: MasterConfig,
    pub(crate) raft: Raft,
    pub(crate) store: Arc<KvStore>,
    pub(crate) hub: Arc<WatchHub>,
    pub(crate) lessor: Arc<Lessor>,
    pub(crate) channels: PeerChannels,
    read_tx: mpsc::UnboundedSender<ReadWaiter>,
    /// A follower's reads on their way to the leader ([`reads`]).
    remote_reads: mpsc::UnboundedSender<RemoteRead>,
    proposals: mpsc::UnboundedSender<Proposal>,
    /// A follower's writes on their way to the leader ([`forward`]).
    forwards: mpsc::UnboundedSender<Forward>,
    /// A follower's streams to the leader, for its writes and reads ([`link`]).
    links: link::Links,
    pub(crate) shutdown: CancellationToken,
    revoking: Mutex<HashSet<i64>>,
    /// True once this master has published its addresses and the cluster id
    /// is known (etcd likewise serves clients only after publishing itself).
    ready: tokio::sync::watch::Sender<bool>,
    /// When this master last heard from a leader ([`crate::election`]).
    pub(crate) heard: crate::election::Heard,
    /// `Some(term)` while this master leads ([`Master::leadership`]).
    leadership: tokio::sync::watch::Receiver<Option<u64>>,
    /// The store's Prometheus series ([`crate::metrics`]).
    pub(crate) metrics: Arc<crate::metrics::StoreMetrics>,
    /// Holds new proposals during a leadership transfer.
    hold: Arc<transfer::Hold>,
    /// Holds applies while true ([`Master::hold_applies`]).
    pub(crate) applies_held: Arc<tokio::sync::watch::Sender<bool>>,
    /// The ids of the calls this master proposes.
    request_ids: request_ids::RequestIds,
}

/// A cheap handle on a running master, shared by every service and by the
/// embedder (see [`crate::RunningMaster`]).
#[derive(Clone)]
pub struct Master(Arc<MasterInner>);

// The crate's own code reads the shared state as `master.store` and the like.
impl std::ops::Deref for Master {
    type Target = MasterInner;
    fn deref(&self) -> &MasterInner {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("opening the data dir: {0}")]
    Storage(String),
    #[error("starting raft: {0}")]
    Raft(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How long a request (a write, a linearizable read, a lease query) may
/// take before it fails with "request timed out": as etcd's `ReqTimeout`,
/// five seconds for queueing, applying and disk, and two election
/// timeouts for an election on the way. A fixed five seconds failed
/// `etcdctl check perf --load=l`'s final delete, which etcd answers: its
/// apply alone took up to 4.8 s here. At most [`REQUEST_DEADLINE_MAX`].
fn request_deadline(election_timeout_ms: u64) -> Duration {
    (Duration::from_secs(5) + Duration::from_millis(2 * election_timeout_ms))
        .min(REQUEST_DEADLINE_MAX)
}

/// The longest request deadline, whatever the election timeout: a write is
/// retried with its request id until the deadline, and the state machine
/// remembers an id for a minute of log time (`OnceLimits::keep_ms`), so a
/// retry must end well before its id is forgotten.
const REQUEST_DEADLINE_MAX: Duration = Duration::from_secs(20);

/// How long one request forwarded to the leader may take before it is
/// abandoned for whoever leads now (its leader may be paused or cut off):
/// four election timeouts, a second at least.
fn forward_attempt_limit(election_timeout_ms: u64) -> Duration {
    Duration::from_millis((election_timeout_ms * 4).max(1000))
}

/// Hand `item` to the loop behind `queue` and wait until `deadline` for
/// its answer on `rx`.
async fn hand_over<T, R>(
    queue: &mpsc::UnboundedSender<T>,
    item: T,
    rx: oneshot::Receiver<Result<R>>,
    deadline: tokio::time::Instant,
) -> Result<R> {
    queue
        .send(item)
        .map_err(|_| Error::Unavailable("master is shutting down".into()))?;
    match tokio::time::timeout_at(deadline, rx).await {
        Err(_) => Err(Error::Timeout),
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(Error::Unavailable("master is shutting down".into())),
    }
}

impl Master {
    /// Open the data dir and start Raft (servers are started by [`crate::server`]).
    pub(crate) async fn open(cfg: MasterConfig) -> std::result::Result<Master, StartError> {
        cfg.validate().map_err(StartError::Config)?;
        let id = node_id_from_name(&cfg.name);
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| StartError::Storage(format!("{}: {e}", cfg.data_dir.display())))?;
        let db_path = cfg.data_dir.join("db");
        let db = tokio::task::spawn_blocking(move || engine::open(&db_path))
            .await
            .map_err(|e| StartError::Storage(e.to_string()))?
            .map_err(|e| StartError::Storage(e.to_string()))?;
        crate::format::check(&db).map_err(|e| {
            StartError::Storage(format!("{}: {e}", cfg.data_dir.join("db").display()))
        })?;
        let metrics = crate::metrics::StoreMetrics::new(&cfg.metrics);
        let store =
            Arc::new(KvStore::open(db.clone()).map_err(|e| StartError::Storage(e.to_string()))?);
        store.observe_commits(metrics.backend_commit.clone());
        let hub = Arc::new(WatchHub::default());
        let lessor = Arc::new(Lessor::default());
        let (ctx, crx) = std::sync::mpsc::channel::<i64>();
        let cstore = store.clone();
        std::thread::Builder::new()
            .name("mvcc-compactor".into())
            .spawn(move || {
                while let Ok(mut rev) = crx.recv() {
                    while let Ok(r) = crx.try_recv() {
                        rev = rev.max(r);
                    }
                    match cstore.compact_physical(rev) {
                        Ok(done) => tracing::info!(
                            revision = rev,
                            removed = done.removed,
                            keys = done.keys_examined,
                            "compaction finished"
                        ),
                        Err(e) => tracing::error!(revision = rev, error = %e, "compaction failed"),
                    }
                }
            })
            .map_err(|e| StartError::Storage(e.to_string()))?;
        // Finish a physical compaction that a crash interrupted (it leaves a
        // correct state, but one that keeps what it should have removed).
        if store.compact_revision() > 0 {
            let _ = ctx.send(store.compact_revision());
        }
        let (applies_held, held_rx) = tokio::sync::watch::channel(false);
        let listeners = Listeners {
            hub: hub.clone(),
            lessor: lessor.clone(),
            compactor: ctx,
            applies_held: held_rx,
        };
        let install = Arc::new(InstallGate::default());
        let mut log = LogStore::with_fsync_histogram(
            db,
            id,
            install.clone(),
            Some(metrics.wal_fsync.clone()),
            !cfg.unsafe_no_fsync,
        )
        .map_err(|e| StartError::Storage(e.to_string()))?;
        let durable = log.durability();
        let log_bytes = log.snapshot_by_bytes(cfg.snapshot_log_bytes);
        let mut sm = StateMachine::new(
            store.clone(),
            cfg.data_dir.join("snapshots"),
            listeners,
            install,
            Some(durable.clone()),
        )
        .map_err(|e| StartError::Storage(e.to_string()))?;
        sm.report_snapshots_to(log_bytes.clone());
        lessor.reset(
            &store
                .leases()
                .map_err(|e| StartError::Storage(e.to_string()))?,
        );
        // A power loss must not lose the folders themselves: RocksDB syncs
        // what it writes inside db/, not the directory entries that make
        // db/ and snapshots/ reachable.
        sync_dirs(&cfg.data_dir)
            .map_err(|e| StartError::Storage(format!("syncing {}: {e}", cfg.data_dir.display())))?;
        if cfg.unsafe_no_fsync {
            tracing::warn!(
                "--unsafe-no-fsync: the Raft log and the vote are not fsynced; a power loss \
                 can lose acknowledged writes"
            );
        }
        let channels = PeerChannels::new(cfg.security.peer_client.clone());
        let keep = (cfg.snapshot_logs / 10).max(1);
        let (election_min, election_max) = openraft_election(cfg.election_timeout_ms);
        let rcfg = openraft::Config {
            cluster_name: "flotilla".into(),
            heartbeat_interval: cfg.heartbeat_interval_ms,
            election_timeout_min: election_min,
            election_timeout_max: election_max,
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_logs.max(1)),
            max_in_snapshot_log_to_keep: keep,
            snapshot_max_chunk_size: 1 << 20,
            // Every AppendEntries must finish within the heartbeat interval
            // (openraft's timeout), so keep them small: entries are batches.
            max_payload_entries: 32,
            // Elections start from `election::election_loop` (Pre-Vote).
            enable_elect: false,
            ..Default::default()
        };
        let rcfg = Arc::new(
            rcfg.validate()
                .map_err(|e| StartError::Config(e.to_string()))?,
        );
        let raft = Raft::new(
            id,
            rcfg,
            NetworkFactory {
                channels: channels.clone(),
                first_retry: Duration::from_millis(cfg.heartbeat_interval_ms),
                metrics: metrics.clone(),
                durable: durable.clone(),
            },
            log,
            sm,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let (read_tx, read_rx) = mpsc::unbounded_channel();
        let (remote_reads, remote_reads_rx) = mpsc::unbounded_channel();
        let (proposals, proposals_rx) = mpsc::unbounded_channel();
        let (forwards, forwards_rx) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let links = link::Links::new(
            channels.clone(),
            metrics.clone(),
            shutdown.clone(),
            forward_attempt_limit(cfg.election_timeout_ms),
        );
        tokio::spawn(forward_loop(links.clone(), forwards_rx, metrics.clone()));
        let leadership = leadership::follow(&raft);
        let master = Master(Arc::new(MasterInner {
            id,
            cfg,
            raft,
            store,
            hub,
            lessor,
            channels,
            read_tx,
            remote_reads,
            proposals,
            forwards,
            links,
            shutdown,
            revoking: Mutex::new(HashSet::new()),
            ready: tokio::sync::watch::channel(false).0,
            heard: crate::election::Heard::default(),
            leadership,
            metrics,
            hold: Arc::default(),
            applies_held: Arc::new(applies_held),
            request_ids: request_ids::RequestIds::new(),
        }));
        tokio::spawn(master.clone().lease_clock_loop());
        tokio::spawn(master.clone().read_index_loop(read_rx));
        tokio::spawn(master.clone().remote_read_loop(remote_reads_rx));
        tokio::spawn(proposer_loop(
            master.raft.clone(),
            proposals_rx,
            master.metrics.clone(),
            master.hold.clone(),
        ));
        tokio::spawn(crate::metrics::follow(
            master.raft.clone(),
            master.store.clone(),
            master.metrics.clone(),
            master.shutdown.clone(),
        ));
        tokio::spawn(crate::election::election_loop(master.clone()));
        triggers::spawn(&master.raft, durable, log_bytes, &master.shutdown);
        Ok(master)
    }

    /// Found the cluster (first start with `--initial-cluster`) or ask to join it.
    pub(crate) async fn bootstrap(&self) -> std::result::Result<(), StartError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        if !self.cfg.initial_cluster.is_empty() {
            let members: BTreeMap<NodeId, MasterNode> = self
                .cfg
                .initial_cluster
                .iter()
                .map(|(n, a)| {
                    (
                        node_id_from_name(n),
                        MasterNode {
                            name: n.clone(),
                            peer_addr: a.clone(),
                        },
                    )
                })
                .collect();
            match self.raft.initialize(members).await {
                Ok(()) => tracing::info!("cluster founded"),
                Err(RaftError::APIError(e)) => tracing::info!(reason = %e, "not initializing"),
                Err(e) => return Err(StartError::Raft(e.to_string())),
            }
        } else if !self.cfg.join.is_empty() {
            tokio::spawn(self.clone().join_loop());
        }
        Ok(())
    }

    /// Start the background duties: member registration, lease expiry,
    /// automatic compaction, the cluster id.
    pub(crate) fn spawn_duties(&self) {
        tokio::spawn(self.clone().duties_loop());
    }

    /// See [`forward_attempt_limit`].
    fn forward_attempt_limit(&self) -> Duration {
        forward_attempt_limit(self.cfg.election_timeout_ms)
    }

    /// See [`request_deadline`].
    fn request_deadline(&self) -> Duration {
        request_deadline(self.cfg.election_timeout_ms)
    }

    /// Wait until this master is published (see `ready`), at most `limit`.
    /// Returns whether it is.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let mut rx = self.ready.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub(crate) fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.store.cluster_id(),
            member_id: self.id,
            revision,
            raft_term: self.raft.metrics().borrow().current_term,
        }
    }

    pub fn current_leader(&self) -> Option<(NodeId, MasterNode)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let lid = m.current_leader?;
        let node = m
            .membership_config
            .nodes()
            .find(|(id, _)| **id == lid)
            .map(|(_, n)| n.clone())?;
        Some((lid, node))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    async fn wait_for_leader(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(NodeId, MasterNode)> {
        let mut rx = self.raft.metrics();
        loop {
            if let Some(l) = self.current_leader() {
                return Ok(l);
            }
            tokio::select! {
                r = rx.changed() => { if r.is_err() { return Err(Error::Unavailable("master is shutting down".into())); } }
                _ = tokio::time::sleep_until(deadline) => return Err(Error::NoLeader),
            }
        }
    }

    /// Replicate a command and return what applying it produced. On a
    /// follower the command is forwarded to the leader.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult> {
        Ok(self.propose_reporting_replay(cmd).await?.0)
    }

    /// [`Master::propose`] of a command with a caller's request id (the
    /// same on every retry of one client call): applied at most once, and
    /// the answer says whether this was a replay of an earlier application.
    pub async fn propose_once(
        &self,
        id: (u64, u64),
        cmd: Command,
    ) -> Result<(CommandResult, bool)> {
        self.propose_reporting_replay(Command::Once {
            id,
            cmd: Box::new(cmd),
        })
        .await
    }

    async fn propose_reporting_replay(&self, cmd: Command) -> Result<(CommandResult, bool)> {
        self.metrics.pending.inc();
        let r = self.propose_raw(cmd).await;
        self.metrics.pending.dec();
        if r.is_err() {
            self.metrics.failed.inc();
        }
        let r = r?;
        Ok(r.unwrap_replay())
    }

    async fn propose_raw(&self, cmd: Command) -> Result<CommandResult> {
        let deadline = tokio::time::Instant::now() + self.request_deadline();
        // A unique id makes the retries below safe: an attempt that failed
        // ambiguously (the leader died after appending it) may still be
        // committed, and the state machine then applies the retry as a replay.
        let cmd = match cmd {
            c @ Command::Once { .. } => c,
            c => Command::Once {
                id: (self.id, self.request_ids.next()),
                cmd: Box::new(c),
            },
        };
        let attempt_limit = self.forward_attempt_limit();
        // Attempts that ended without an answer: each may still reach the
        // log (see `settle`).
        let mut unanswered = 0usize;
        loop {
            let (leader, node) = self.wait_for_leader(deadline).await?;
            let attempt = if leader == self.id {
                match self.submit(cmd.clone()).await {
                    Ok(r) => return Ok(r),
                    Err(Error::NoLeader) => Err(Error::NoLeader),
                    Err(e) => return Err(e),
                }
            } else {
                let attempt_deadline = deadline.min(tokio::time::Instant::now() + attempt_limit);
                let forwarded = self.forward_propose(&node.peer_addr, &cmd, attempt_deadline);
                match self.unless_replaced(leader, &node, forwarded).await {
                    Err(Error::Timeout) if attempt_deadline < deadline => Err(Error::Unavailable(
                        format!("leader {} did not answer in time", node.name),
                    )),
                    other => other,
                }
            };
            match attempt {
                Ok(r) => return settle(&cmd, r, unanswered),
                Err(e @ Error::Timeout) => return Err(e),
                Err(e) => {
                    unanswered += 1;
                    if tokio::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, "proposal not taken; retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Run `attempt`, a request forwarded to `leader`, unless another master
    /// becomes leader first: a paused or cut-off leader may hold a forwarded
    /// request until the attempt's deadline, while a new leader is already
    /// there to take it. Abandoning is safe: every forwarded request is
    /// idempotent (proposals carry a request id that the state machine
    /// applies once, reads and lease queries change nothing).
    async fn unless_replaced<T>(
        &self,
        leader: NodeId,
        node: &MasterNode,
        attempt: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let mut rx = self.raft.metrics();
        let replaced = async move {
            let moved = rx
                .wait_for(|m| m.current_leader.is_some_and(|l| l != leader))
                .await
                .is_ok();
            if !moved {
                // Shutting down: let the attempt end on its own.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = attempt => r,
            () = replaced => Err(Error::Unavailable(format!(
                "leader {} was replaced before it answered",
                node.name
            ))),
        }
    }

    /// Hand a command to this (leader) master's batcher and wait for its result.
    /// `Err(NoLeader)` when this master is not (or no longer) the leader.
    pub(crate) async fn submit(&self, cmd: Command) -> Result<CommandResult> {
        let (tx, rx) = oneshot::channel();
        let size = command_size(&cmd);
        self.proposals
            .send(Proposal { cmd, size, tx })
            .map_err(|_| Error::Unavailable("master is shutting down".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("master is shutting down".into()))?
    }

    /// Hand a write to the forwarder, which batches it with the others on
    /// their way to the leader at `addr`, and wait for its answer.
    async fn forward_propose(
        &self,
        addr: &str,
        cmd: &Command,
        deadline: tokio::time::Instant,
    ) -> Result<CommandResult> {
        let (tx, rx) = oneshot::channel();
        let f = Forward {
            addr: addr.to_string(),
            cmd: cmd.clone(),
            request_id: flotilla_telemetry::request::current_request_id(),
            deadline,
            tx,
        };
        hand_over(&self.forwards, f, rx, deadline).await
    }

    async fn duties_loop(self) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leader = false;
        let mut registered = false;
        let mut ticks = 0u64;
        // A joint configuration seen at the last check (a second ago).
        let mut joint_seen: Option<BTreeSet<NodeId>> = None;
        let mut finishing: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            ticks += 1;
            let leader = self.is_leader();
            if leader && !was_leader {
                // (Lease clocks restart on the term change itself: see
                // `lease_clock_loop`.)
                if self.store.cluster_id() == 0 {
                    let id: u64 = rand::thread_rng().gen_range(1..u64::MAX);
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = me.propose(Command::SetClusterId { id }).await {
                            tracing::warn!(error = %e, "could not set the cluster id");
                        }
                    });
                }
            }
            was_leader = leader;
            if !registered && self.current_leader().is_some() {
                registered = self.register_self().await;
            }
            if registered && self.store.cluster_id() != 0 {
                self.ready.send_replace(true);
            }
            if leader {
                self.revoke_expired();
                if ticks % 5 == 3 {
                    self.forget_removed_members().await;
                }
                if ticks.is_multiple_of(5) {
                    self.auto_compact().await;
                    // A change in progress is joint for one commit; one that
                    // is still joint a second later was abandoned.
                    let goal = self.joint_goal();
                    let idle = finishing.as_ref().is_none_or(|h| h.is_finished());
                    if idle && goal.is_some() && goal == joint_seen {
                        if let Some(g) = goal.clone() {
                            let me = self.clone();
                            finishing =
                                Some(tokio::spawn(
                                    async move { me.finish_joint_membership(g).await },
                                ));
                        }
                    }
                    joint_seen = goal;
                }
            }
        }
    }

    async fn auto_compact(&self) {
        let keep = self.cfg.auto_compaction_retention;
        if keep <= 0 {
            return;
        }
        let rev = self.store.revision();
        let target = rev - keep;
        // Compact in steps of a tenth of the retention, not on every write.
        if target > 0 && target - self.store.compact_revision() >= (keep / 10).max(1) {
            match self.propose(Command::Compact { revision: target }).await {
                Ok(_) => tracing::debug!(revision = target, "automatic compaction"),
                Err(e) => tracing::warn!(error = %e, "automatic compaction failed"),
            }
        }
    }
}

#[cfg(test)]
mod deadline_tests {
    use super::*;

    #[test]
    fn a_request_deadline_is_etcds_and_ends_well_before_its_request_id_is_forgotten() {
        assert_eq!(request_deadline(1000), Duration::from_secs(7));
        assert_eq!(request_deadline(300), Duration::from_millis(5600));
        // etcd allows election timeouts up to 50 s: a retry would then
        // outlast the window of remembered request ids and apply twice.
        let window = Duration::from_millis(crate::mvcc::OnceLimits::default().keep_ms);
        assert!(request_deadline(50_000) * 2 <= window);
    }
}
