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
use crate::log_store::LogStore;
use crate::mvcc::KvStore;
use crate::network::{self, NetworkFactory, PeerChannels};
use crate::state_machine::{Listeners, StateMachine};
use crate::types::{
    node_id_from_name, Command, CommandResult, MasterNode, MemberAddrs, NodeId, Outcome, Raft,
};
use crate::watch::WatchHub;

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
    /// Revisions kept by automatic compaction; 0 turns it off.
    pub auto_compaction_retention: i64,
    pub limits: Limits,
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
            auto_compaction_retention: 10_000,
            limits: Limits::default(),
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

pub(crate) type ReadWaiter = oneshot::Sender<Result<u64>>;

pub struct MasterInner {
    pub id: NodeId,
    pub cfg: MasterConfig,
    pub raft: Raft,
    pub store: Arc<KvStore>,
    pub hub: Arc<WatchHub>,
    pub lessor: Arc<Lessor>,
    pub channels: PeerChannels,
    read_tx: mpsc::UnboundedSender<ReadWaiter>,
    proposals: mpsc::UnboundedSender<Proposal>,
    pub shutdown: CancellationToken,
    revoking: Mutex<HashSet<i64>>,
    /// True once this master has published its addresses and the cluster id
    /// is known (etcd likewise serves clients only after publishing itself).
    ready: tokio::sync::watch::Sender<bool>,
    /// When this master last heard from a leader ([`crate::election`]).
    pub heard: crate::election::Heard,
}

/// A cheap handle on a running master, shared by every service.
#[derive(Clone)]
pub struct Master(pub Arc<MasterInner>);

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

const PROPOSE_DEADLINE: Duration = Duration::from_secs(5);

impl Master {
    /// Open the data dir and start Raft (servers are started by [`crate::server`]).
    pub async fn open(cfg: MasterConfig) -> std::result::Result<Master, StartError> {
        cfg.validate().map_err(StartError::Config)?;
        let id = node_id_from_name(&cfg.name);
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| StartError::Storage(format!("{}: {e}", cfg.data_dir.display())))?;
        let db_path = cfg.data_dir.join("db");
        let db = tokio::task::spawn_blocking(move || engine::open(&db_path))
            .await
            .map_err(|e| StartError::Storage(e.to_string()))?
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let store =
            Arc::new(KvStore::open(db.clone()).map_err(|e| StartError::Storage(e.to_string()))?);
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
                        Ok(n) => tracing::info!(revision = rev, removed = n, "compaction finished"),
                        Err(e) => tracing::error!(revision = rev, error = %e, "compaction failed"),
                    }
                }
            })
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let listeners = Listeners {
            hub: hub.clone(),
            lessor: lessor.clone(),
            compactor: ctx,
        };
        let sm = StateMachine::new(store.clone(), cfg.data_dir.join("snapshots"), listeners)
            .map_err(|e| StartError::Storage(e.to_string()))?;
        lessor.reset(
            &store
                .leases()
                .map_err(|e| StartError::Storage(e.to_string()))?,
        );
        let log = LogStore::new(db);
        let channels = PeerChannels::default();
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
            },
            log,
            sm,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let (read_tx, read_rx) = mpsc::unbounded_channel();
        let (proposals, proposals_rx) = mpsc::unbounded_channel();
        let master = Master(Arc::new(MasterInner {
            id,
            cfg,
            raft,
            store,
            hub,
            lessor,
            channels,
            read_tx,
            proposals,
            shutdown: CancellationToken::new(),
            revoking: Mutex::new(HashSet::new()),
            ready: tokio::sync::watch::channel(false).0,
            heard: crate::election::Heard::default(),
        }));
        tokio::spawn(master.clone().read_index_loop(read_rx));
        tokio::spawn(proposer_loop(master.raft.clone(), proposals_rx));
        tokio::spawn(crate::election::election_loop(master.clone()));
        Ok(master)
    }

    /// Found the cluster (first start with `--initial-cluster`) or ask to join it.
    pub async fn bootstrap(&self) -> std::result::Result<(), StartError> {
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
    pub fn spawn_duties(&self) {
        tokio::spawn(self.clone().duties_loop());
    }

    /// How long one request forwarded to the leader may take before it is
    /// abandoned for whoever leads now (its leader may be paused or cut off).
    fn forward_attempt_limit(&self) -> Duration {
        Duration::from_millis((self.cfg.election_timeout_ms * 4).max(1000))
    }

    /// Wait until this master is published (see `ready`), at most `limit`.
    /// Returns whether it is.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let mut rx = self.ready.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn header(&self, revision: i64) -> ResponseHeader {
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
        let r = self.propose_raw(cmd).await?;
        Ok(r.unwrap_replay())
    }

    async fn propose_raw(&self, cmd: Command) -> Result<CommandResult> {
        let deadline = tokio::time::Instant::now() + PROPOSE_DEADLINE;
        // A unique id makes the retries below safe: an attempt that failed
        // ambiguously (the leader died after appending it) may still be
        // committed, and the state machine then applies the retry as a replay.
        let cmd = match cmd {
            c @ Command::Once { .. } => c,
            c => Command::Once {
                id: (self.id, rand::thread_rng().gen()),
                cmd: Box::new(c),
            },
        };
        let attempt_limit = self.forward_attempt_limit();
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
                Ok(r) => return Ok(r),
                Err(e @ Error::Timeout) => return Err(e),
                Err(e) => {
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

    async fn forward_propose(
        &self,
        addr: &str,
        cmd: &Command,
        deadline: tokio::time::Instant,
    ) -> Result<CommandResult> {
        let mut client = self.channels.client(addr).map_err(Error::Unavailable)?;
        let payload = network::encode(cmd).map_err(Error::Internal)?;
        let reply = tokio::time::timeout_at(deadline, client.propose(payload))
            .await
            .map_err(|_| Error::Timeout)?;
        match reply {
            Ok(p) => network::decode::<CommandResult>(&p.into_inner()).map_err(Error::Internal),
            // The leader moved or is unreachable: the caller retries.
            Err(s) => Err(Error::Unavailable(s.message().to_string())),
        }
    }

    /// Wait until this master has applied everything committed before the
    /// call: a read after this is linearizable (read index, confirmed by a
    /// quorum of heartbeats, never a clock-based lease).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn linearize(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + PROPOSE_DEADLINE;
        let index = loop {
            let (leader, node) = self.wait_for_leader(deadline).await?;
            let r = if leader == self.id {
                self.local_read_index().await
            } else {
                let mut c = self
                    .channels
                    .client(&node.peer_addr)
                    .map_err(Error::Unavailable)?;
                let ask = async {
                    match tokio::time::timeout_at(deadline, c.read_index(ReadIndexRequest {})).await
                    {
                        Err(_) => Err(Error::Timeout),
                        Ok(Ok(r)) => Ok(r.into_inner().index),
                        Ok(Err(s)) => Err(Error::Unavailable(s.message().to_string())),
                    }
                };
                match self.unless_replaced(leader, &node, ask).await {
                    Err(Error::Timeout) => return Err(Error::Timeout),
                    other => other,
                }
            };
            match r {
                Ok(i) => break i,
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|_| Error::Timeout)?;
        Ok(())
    }

    /// The leader's read index, shared by every read that arrived before the
    /// quorum check started.
    pub async fn local_read_index(&self) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.read_tx
            .send(tx)
            .map_err(|_| Error::Unavailable("master is shutting down".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("master is shutting down".into()))?
    }

    async fn read_index_loop(self, mut rx: mpsc::UnboundedReceiver<ReadWaiter>) {
        loop {
            let first = tokio::select! {
                w = rx.recv() => match w { Some(w) => w, None => return },
                // Holding `self` must not keep the master (and its database) alive.
                _ = self.shutdown.cancelled() => return,
            };
            let mut waiters = vec![first];
            while let Ok(w) = rx.try_recv() {
                waiters.push(w);
            }
            let res = match self.raft.get_read_log_id().await {
                Ok((read, _applied)) => Ok(read.map(|l| l.index).unwrap_or(0)),
                Err(e) => Err(Error::Unavailable(e.to_string())),
            };
            for w in waiters {
                let _ = w.send(match &res {
                    Ok(i) => Ok(*i),
                    Err(e) => Err(Error::Unavailable(e.to_string())),
                });
            }
        }
    }

    /// Renew a lease on the leader (forwarded there from a follower).
    /// `Ok(None)` when the lease does not exist or expired.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<Option<i64>> {
        let r = self.lease_on_leader(id, true).await?;
        match r {
            LeaseAnswer::Local => self.lease_keep_alive_local(id).await,
            LeaseAnswer::Remote(r) => Ok(r.found.then_some(r.ttl)),
        }
    }

    /// Renew a lease on this (leader) master. A lease that has expired but
    /// whose revocation is not applied yet still has its keys: answer only
    /// once the revocation is applied, as etcd does, so that a client told
    /// "expired" never finds the lease's keys afterwards.
    pub async fn lease_keep_alive_local(&self, id: i64) -> Result<Option<i64>> {
        match self.lessor.renew(id) {
            Renewal::Renewed(ttl) => Ok(Some(ttl)),
            Renewal::Unknown => Ok(None),
            Renewal::Expired => {
                let deadline = tokio::time::Instant::now() + PROPOSE_DEADLINE;
                loop {
                    let store = self.store.clone();
                    let gone = tokio::task::spawn_blocking(move || store.lease_ttl(id))
                        .await
                        .map_err(|e| Error::Internal(e.to_string()))??
                        .is_none();
                    if gone {
                        return Ok(None);
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::Timeout);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Seconds left and granted TTL of a lease, as the leader sees it.
    pub async fn lease_time_to_live(&self, id: i64) -> Result<Option<(i64, i64)>> {
        match self.lease_on_leader(id, false).await? {
            LeaseAnswer::Local => Ok(self.lessor.remaining(id)),
            LeaseAnswer::Remote(r) => Ok(r.found.then_some((r.ttl, r.granted_ttl))),
        }
    }

    /// Find the leader for a lease query: this master, or the answer of the
    /// leader. Both queries are idempotent, so an attempt that hangs (its
    /// leader paused or cut off) is retried on the current leader.
    async fn lease_on_leader(&self, id: i64, renew: bool) -> Result<LeaseAnswer> {
        let deadline = tokio::time::Instant::now() + PROPOSE_DEADLINE;
        let attempt_limit = self.forward_attempt_limit();
        loop {
            let (leader, node) = self.wait_for_leader(deadline).await?;
            if leader == self.id {
                return Ok(LeaseAnswer::Local);
            }
            let attempt = deadline.min(tokio::time::Instant::now() + attempt_limit);
            let ask = self.ask_leader_about_lease(&node, id, renew, attempt);
            match self.unless_replaced(leader, &node, ask).await {
                Ok(r) => return Ok(LeaseAnswer::Remote(r)),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Forward a keep-alive (`renew`) or a time-to-live query to the leader.
    async fn ask_leader_about_lease(
        &self,
        leader: &MasterNode,
        id: i64,
        renew: bool,
        deadline: tokio::time::Instant,
    ) -> Result<flotilla_proto::raft::LeaseReply> {
        let mut c = self
            .channels
            .client(&leader.peer_addr)
            .map_err(Error::Unavailable)?;
        let req = LeaseRequest { id };
        let call = async {
            if renew {
                c.lease_keep_alive(req).await
            } else {
                c.lease_time_to_live(req).await
            }
        };
        Ok(tokio::time::timeout_at(deadline, call)
            .await
            .map_err(|_| Error::Timeout)?
            .map_err(|s| Error::Unavailable(s.message().to_string()))?
            .into_inner())
    }

    /// Members known to Raft, with the client addresses they registered.
    pub fn members(&self) -> Vec<(NodeId, MemberAddrs, bool)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let directory: BTreeMap<NodeId, MemberAddrs> = self.store.members().into_iter().collect();
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        m.membership_config
            .nodes()
            .map(|(id, node)| {
                let addrs = directory.get(id).cloned().unwrap_or_else(|| MemberAddrs {
                    name: node.name.clone(),
                    peer_addr: node.peer_addr.clone(),
                    client_addr: String::new(),
                });
                (*id, addrs, !voters.contains(id))
            })
            .collect()
    }

    /// Admit a new master: as a learner until it has caught up, then as a voter.
    pub async fn add_master(&self, addrs: MemberAddrs) -> Result<()> {
        let id = node_id_from_name(&addrs.name);
        let node = MasterNode {
            name: addrs.name.clone(),
            peer_addr: addrs.peer_addr.clone(),
        };
        let already_voter = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == id);
        if !already_voter {
            // The new master is a learner first (that changes no quorum),
            // then a voter: the promotion needs it to answer.
            self.check_quorum_after(
                |voters| {
                    voters.insert(id);
                },
                Some((id, &node.peer_addr)),
            )
            .await?;
            self.raft.add_learner(id, node, true).await.map_err(|e| {
                Error::Unavailable(format!("adding {} as learner: {e}", addrs.name))
            })?;
            self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
                .await
                .map_err(|e| Error::Unavailable(format!("promoting {}: {e}", addrs.name)))?;
        }
        self.propose(Command::RegisterMember { id, addrs }).await?;
        Ok(())
    }

    pub async fn remove_master(&self, id: NodeId) -> Result<()> {
        let known = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .nodes()
            .any(|(n, _)| *n == id);
        if !known {
            return Err(Error::NotFound("etcdserver: member not found".into()));
        }
        let voters: BTreeSet<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if voters.contains(&id) && voters.len() == 1 {
            return Err(Error::FailedPrecondition(
                "cannot remove the last voting master".into(),
            ));
        }
        if voters.contains(&id) {
            self.check_quorum_after(
                |voters| {
                    voters.remove(&id);
                },
                None,
            )
            .await?;
        }
        // A voter is removed (retain=false drops it entirely); a learner is just dropped.
        let change = if voters.contains(&id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.change_membership(change)
            .await
            .map_err(|e| Error::Unavailable(format!("removing member: {e}")))?;
        // The leader's duties drop the removed master's directory entry.
        Ok(())
    }

    /// Refuse a change of the voters that the masters answering now could
    /// not commit, as etcd does ("unhealthy cluster"). Raft changes voters
    /// through a joint configuration, which commits nothing without a
    /// majority of the old voters *and* of the new ones: removing a master
    /// while another is cut off would stop every write until the cut heals.
    /// `change` turns the current voters into the new ones; `extra` is the
    /// address of a new master not yet known to the membership. Only the
    /// leader checks (elsewhere openraft refuses the change anyway).
    async fn check_quorum_after(
        &self,
        change: impl FnOnce(&mut BTreeSet<NodeId>),
        extra: Option<(NodeId, &str)>,
    ) -> Result<()> {
        let (old, mut addrs) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            if m.state != ServerState::Leader {
                return Ok(());
            }
            let old: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
            let addrs: BTreeMap<NodeId, (String, String)> = m
                .membership_config
                .nodes()
                .map(|(id, n)| (*id, (n.name.clone(), n.peer_addr.clone())))
                .collect();
            (old, addrs)
        };
        if let Some((id, addr)) = extra {
            addrs.insert(id, (format!("{id:x}"), addr.to_string()));
        }
        let mut new = old.clone();
        change(&mut new);
        let limit = Duration::from_millis(self.cfg.election_timeout_ms.max(500));
        let asked: BTreeSet<NodeId> = old.union(&new).copied().collect();
        let mut up = BTreeSet::from([self.id]);
        let pings = asked.iter().filter(|&&id| id != self.id).map(|&id| {
            let addr = addrs.get(&id).map(|a| a.1.clone()).unwrap_or_default();
            let channels = self.channels.clone();
            async move {
                let ok = match channels.client(&addr) {
                    Ok(mut c) => {
                        tokio::time::timeout(limit, c.ping(flotilla_proto::raft::PingRequest {}))
                            .await
                            .is_ok_and(|r| r.is_ok_and(|r| r.into_inner().member_id == id))
                    }
                    Err(_) => false,
                };
                (id, ok)
            }
        });
        for (id, ok) in futures::future::join_all(pings).await {
            if ok {
                up.insert(id);
            }
        }
        let majority = |set: &BTreeSet<NodeId>| set.intersection(&up).count() * 2 > set.len();
        if majority(&old) && majority(&new) {
            return Ok(());
        }
        let name = |id: &NodeId| {
            addrs
                .get(id)
                .map(|a| a.0.clone())
                .unwrap_or_else(|| format!("{id:x}"))
        };
        let down: Vec<String> = asked
            .iter()
            .filter(|id| !up.contains(id))
            .map(name)
            .collect();
        Err(Error::FailedPrecondition(format!(
            "etcdserver: unhealthy cluster: the change needs a majority of the voters before \
             and after it to answer, and {} did not answer within {} ms",
            down.join(", "),
            limit.as_millis()
        )))
    }

    /// Change the voters (removed ones are dropped, not kept as learners).
    /// openraft does it in two steps (a joint configuration, then the new
    /// one) inside the caller's future: if the caller went away between
    /// them (a client that timed out drops its request), the cluster would
    /// stay joint, needing a majority of both configurations. The change
    /// runs in a task of its own so that it always finishes; a joint
    /// configuration left by a crashed leader is finished by the next one
    /// (see `finish_joint_membership`).
    async fn change_membership(&self, change: ChangeMembers<NodeId, MasterNode>) -> Result<()> {
        let raft = self.raft.clone();
        tokio::spawn(async move { raft.change_membership(change, false).await })
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map(|_| ())
            .map_err(|e| Error::Unavailable(e.to_string()))
    }

    /// The voters of a joint configuration's newer half, when this master
    /// leads and the effective configuration is joint.
    fn joint_goal(&self) -> Option<BTreeSet<NodeId>> {
        let m = self.raft.metrics();
        let m = m.borrow();
        if m.state != ServerState::Leader {
            return None;
        }
        let joint = m.membership_config.membership().get_joint_config();
        (joint.len() > 1).then(|| joint.last().cloned().unwrap_or_default())
    }

    /// Finish a membership change whose second step never came (its leader
    /// crashed between the two), toward the newer configuration: the one
    /// the change was heading to.
    async fn finish_joint_membership(&self, goal: BTreeSet<NodeId>) {
        tracing::warn!(voters = ?goal, "finishing a membership change left joint");
        match self
            .change_membership(ChangeMembers::ReplaceAllVoters(goal))
            .await
        {
            Ok(()) => tracing::info!("membership change finished"),
            Err(e) => tracing::warn!(error = %e, "could not finish the membership change yet"),
        }
    }

    async fn join_loop(self) {
        use flotilla_proto::cluster::cluster_admin_client::ClusterAdminClient;
        use flotilla_proto::cluster::AddMasterRequest;
        let req = AddMasterRequest {
            name: self.cfg.name.clone(),
            peer_addr: self.cfg.peer_addr.to_string(),
            client_addr: self.cfg.client_addr.to_string(),
        };
        let mut backoff = Duration::from_millis(200);
        loop {
            for addr in &self.cfg.join {
                if self.shutdown.is_cancelled() {
                    return;
                }
                let Ok(ep) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                else {
                    tracing::error!(addr, "bad --join address");
                    continue;
                };
                let Ok(ch) = ep.connect_timeout(Duration::from_secs(1)).connect().await else {
                    continue;
                };
                match ClusterAdminClient::new(ch).add_master(req.clone()).await {
                    Ok(_) => {
                        tracing::info!(via = addr, "joined the cluster");
                        return;
                    }
                    Err(s) => {
                        tracing::warn!(via = addr, error = s.message(), "join refused; retrying")
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
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
                // A new leader gives every lease a full TTL (as etcd does).
                let store = self.store.clone();
                if let Ok(Ok(leases)) = tokio::task::spawn_blocking(move || store.leases()).await {
                    self.lessor.reset(&leases);
                }
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

    /// Drop directory entries of masters that are no longer members.
    async fn forget_removed_members(&self) {
        let nodes: BTreeSet<NodeId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .nodes()
            .map(|(n, _)| *n)
            .collect();
        for (id, addrs) in self.store.members() {
            if !nodes.contains(&id) {
                match self.propose(Command::UnregisterMember { id }).await {
                    Ok(_) => tracing::info!(name = %addrs.name, "forgot a removed master"),
                    Err(e) => tracing::warn!(error = %e, "could not forget a removed master"),
                }
            }
        }
    }

    async fn register_self(&self) -> bool {
        let want = MemberAddrs {
            name: self.cfg.name.clone(),
            peer_addr: self.cfg.peer_addr.to_string(),
            client_addr: self.cfg.client_addr.to_string(),
        };
        let in_membership = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .nodes()
            .any(|(n, _)| *n == self.id);
        if !in_membership {
            return false;
        }
        let current = self
            .store
            .members()
            .into_iter()
            .find(|(id, _)| *id == self.id)
            .map(|(_, a)| a);
        if current.as_ref() == Some(&want) {
            return true;
        }
        match self
            .propose(Command::RegisterMember {
                id: self.id,
                addrs: want,
            })
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(error = %e, "member registration postponed");
                false
            }
        }
    }

    fn revoke_expired(&self) {
        for id in self.lessor.expired() {
            {
                let mut r = self.revoking.lock().unwrap_or_else(|p| p.into_inner());
                if !r.insert(id) {
                    continue;
                }
            }
            let me = self.clone();
            tokio::spawn(async move {
                // Only this master's own term may revoke on expiry: never
                // forward, or a deposed leader would revoke a lease that the
                // new leader has renewed meanwhile.
                if me.is_leader() {
                    tracing::info!(lease = id, "lease expired; revoking");
                    if let Err(e) = me.submit(Command::LeaseRevoke { id }).await {
                        tracing::warn!(lease = id, error = %e, "revoking an expired lease failed; will retry");
                    }
                }
                me.revoking
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            });
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

/// Where a lease query is answered.
enum LeaseAnswer {
    /// This master is the leader.
    Local,
    /// The leader's answer.
    Remote(flotilla_proto::raft::LeaseReply),
}

/// A command waiting to be put in the log, and who waits for its result.
struct Proposal {
    cmd: Command,
    size: usize,
    tx: oneshot::Sender<Result<CommandResult>>,
}

/// Most commands carried by one log entry.
const MAX_BATCH: usize = 512;
/// Most bytes (roughly) carried by one log entry.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Batches handed to Raft and not yet answered.
const BATCHES_IN_FLIGHT: usize = 2;

fn command_size(cmd: &Command) -> usize {
    match cmd {
        Command::Txn(t) => crate::kv::txn_size(t) + 16,
        Command::Batch(b) => b.iter().map(command_size).sum(),
        _ => 64,
    }
}

/// Group commit above Raft: openraft 0.9 appends (and fsyncs) one log entry
/// at a time, so commands that arrive while earlier ones are being
/// replicated travel together in one entry.
async fn proposer_loop(raft: Raft, mut rx: mpsc::UnboundedReceiver<Proposal>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    let mut carry: Option<Proposal> = None;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) if bytes + p.size > MAX_BATCH_BYTES => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    bytes += p.size;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            write_batch(&raft, batch).await;
        });
    }
}

fn write_error(e: &RaftError<NodeId, ClientWriteError<NodeId, MasterNode>>) -> Error {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Error::NoLeader,
        e => Error::Unavailable(e.to_string()),
    }
}

/// Resolves once this master no longer leads in `term`.
async fn deposed(raft: &Raft, term: u64) {
    let mut rx = raft.metrics();
    // Err: shutting down, which deposes too.
    let _ = rx
        .wait_for(|m| m.state != ServerState::Leader || m.current_term != term)
        .await
        .is_ok();
}

/// Write through openraft, unless this master stops leading first.
///
/// openraft 0.9 answers a write once its entry is applied, or refuses it
/// when the entry is truncated by a newer leader; but when a deposed leader
/// catches up by installing a snapshot, its uncommitted entries vanish
/// without an answer, and the write would wait forever. Two such writes
/// held both batch slots, so the master could never write again, even as
/// leader (found by the partition-leader nemesis). The outcome of an
/// abandoned write is unknown; the caller retries it under the same
/// request id, which the state machine applies at most once.
async fn client_write(raft: &Raft, cmd: Command) -> Result<CommandResult> {
    let term = {
        let m = raft.metrics();
        let m = m.borrow();
        (m.state == ServerState::Leader).then_some(m.current_term)
    };
    let write = async {
        raft.client_write(cmd)
            .await
            .map(|r| r.data)
            .map_err(|e| write_error(&e))
    };
    match term {
        None => write.await,
        Some(term) => tokio::select! {
            r = write => r,
            () = deposed(raft, term) => Err(Error::NoLeader),
        },
    }
}

async fn write_batch(raft: &Raft, mut batch: Vec<Proposal>) {
    if batch.len() == 1 {
        if let Some(p) = batch.pop() {
            let _ = p.tx.send(client_write(raft, p.cmd).await);
        }
        return;
    }
    let (cmds, txs): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.cmd, p.tx)).unzip();
    match client_write(raft, Command::Batch(cmds)).await {
        Ok(resp) => match resp.outcome {
            Outcome::Batch(results) if results.len() == txs.len() => {
                for (tx, r) in txs.into_iter().zip(results) {
                    let _ = tx.send(Ok(r));
                }
            }
            other => {
                for tx in txs {
                    let _ = tx.send(Err(Error::Internal(format!(
                        "unexpected batch outcome {other:?}"
                    ))));
                }
            }
        },
        Err(e) => {
            for tx in txs {
                let _ = tx.send(Err(match &e {
                    Error::NoLeader => Error::NoLeader,
                    other => Error::Unavailable(other.to_string()),
                }));
            }
        }
    }
}
