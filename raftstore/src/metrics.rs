//! The store's Prometheus series, under etcd's names where etcd measures
//! the same thing (so that etcd dashboards and alerts work unchanged), and
//! `flotilla_*` for what is Flotilla's own.
//!
//! Most are updated where the work happens (the WAL fsync, the state
//! machine's commit, the batcher, the peer network); the Raft gauges follow
//! openraft's metrics channel ([`follow`]), and the database size is read
//! every few seconds.
//!
//! Where Flotilla's meaning differs from etcd's, it says so here:
//! - `etcd_server_proposals_committed_total` is, on the leader, the highest
//!   index a quorum holds; on a follower (openraft does not report its
//!   commit index) the applied index, which trails it by one apply.
//! - `etcd_server_proposals_pending` and `_failed_total` count writes this
//!   master took from clients (forwarded to the leader or proposed here).
//! - `etcd_network_peer_round_trip_time_seconds` is the round trip of the
//!   leader's heartbeats (AppendEntries without entries) to each peer.

use std::sync::Arc;
use std::time::Duration;

use flotilla_telemetry::prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};
use flotilla_telemetry::register;
use openraft::ServerState;

use crate::mvcc::KvStore;
use crate::types::{NodeId, Raft};

/// Every series of one master.
pub struct StoreMetrics {
    pub has_leader: IntGauge,
    pub is_leader: IntGauge,
    pub leader_changes: IntCounter,
    pub committed: IntGauge,
    pub applied: IntGauge,
    pub pending: IntGauge,
    pub failed: IntCounter,
    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,
    pub db_size: IntGauge,
    pub db_in_use: IntGauge,
    pub keys: IntGauge,
    pub peer_rtt: HistogramVec,
    pub term: IntGauge,
    pub last_log_index: IntGauge,
    pub snapshot_index: IntGauge,
    pub purged_index: IntGauge,
    pub follower_lag: IntGaugeVec,
    pub snapshot_sends: IntCounter,
    /// AppendEntries sent to peers on a follower's stream, and as calls
    /// (to a master that serves no stream): the two `via` series of
    /// `flotilla_raft_appends_sent_total`, resolved once.
    pub appends_streamed: IntCounter,
    pub appends_called: IntCounter,
    pub append_stream_opens: IntCounter,
    /// A follower's questions to the leader (a batch of forwarded writes
    /// or a read index), on its stream or as a call: the two `via` series
    /// of `flotilla_raft_forwards_sent_total`.
    pub forwards_streamed: IntCounter,
    pub forwards_called: IntCounter,
    pub leader_stream_opens: IntCounter,
    pub batch_commands: Histogram,
    pub forward_commands: Histogram,
    /// Linearizable reads answered by one read index: a quorum check on
    /// the leader, or a `ReadIndex` call from a follower to the leader (the
    /// two `via` series of `flotilla_read_index_batch_reads`).
    pub read_batch_leader: Histogram,
    pub read_batch_follower: Histogram,
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help).expect("valid metric"))
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name, help).expect("valid metric"))
}

/// etcd's disk histograms: 1 ms to 8 s, doubling.
fn disk_buckets() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 14).unwrap_or_default()
}

impl StoreMetrics {
    pub fn new(r: &Registry) -> Arc<Self> {
        let read_batch = register(
            r,
            HistogramVec::new(
                HistogramOpts::new(
                    "flotilla_read_index_batch_reads",
                    "Linearizable reads answered by one read index: a quorum check on the leader (via=leader), or a ReadIndex call from a follower to the leader (via=follower).",
                )
                .buckets(exponential_buckets(1.0, 2.0, 10).unwrap_or_default()),
                &["via"],
            )
            .expect("valid metric"),
        );
        let appends_sent = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "flotilla_raft_appends_sent_total",
                    "AppendEntries this master sent to peers, by how: on a peer's stream or one call each.",
                ),
                &["via"],
            )
            .expect("valid metric"),
        );
        let forwards_sent = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "flotilla_raft_forwards_sent_total",
                    "Questions a follower sent to the leader (a batch of forwarded writes, or a read index), by how: on its stream to the leader, or one call each (to a leader that serves no stream).",
                ),
                &["via"],
            )
            .expect("valid metric"),
        );
        Arc::new(StoreMetrics {
            has_leader: gauge(
                r,
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            is_leader: gauge(
                r,
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            ),
            leader_changes: counter(
                r,
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            ),
            committed: gauge(
                r,
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            ),
            applied: gauge(
                r,
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            ),
            pending: gauge(
                r,
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            failed: counter(
                r,
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            ),
            wal_fsync: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "etcd_disk_wal_fsync_duration_seconds",
                        "The latency distributions of fsync called by WAL.",
                    )
                    .buckets(disk_buckets()),
                )
                .expect("valid metric"),
            ),
            backend_commit: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "etcd_disk_backend_commit_duration_seconds",
                        "The latency distributions of commit called by backend.",
                    )
                    .buckets(disk_buckets()),
                )
                .expect("valid metric"),
            ),
            db_size: gauge(
                r,
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            ),
            db_in_use: gauge(
                r,
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            ),
            keys: gauge(
                r,
                "etcd_debugging_mvcc_keys_total",
                "Total number of keys.",
            ),
            peer_rtt: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "etcd_network_peer_round_trip_time_seconds",
                        "Round-Trip-Time histogram between peers",
                    )
                    .buckets(exponential_buckets(0.0001, 2.0, 16).unwrap_or_default()),
                    &["To"],
                )
                .expect("valid metric"),
            ),
            term: gauge(r, "flotilla_raft_term", "The Raft term this master is in."),
            last_log_index: gauge(
                r,
                "flotilla_raft_last_log_index",
                "The index of the last entry in this master's Raft log.",
            ),
            snapshot_index: gauge(
                r,
                "flotilla_raft_snapshot_index",
                "The last log index that this master's latest snapshot covers (taken here or received).",
            ),
            purged_index: gauge(
                r,
                "flotilla_raft_log_purged_index",
                "The last log index purged from this master's Raft log (behind a snapshot).",
            ),
            follower_lag: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "flotilla_raft_follower_lag_entries",
                        "On the leader: log entries each peer is behind the leader's last entry.",
                    ),
                    &["peer"],
                )
                .expect("valid metric"),
            ),
            snapshot_sends: counter(
                r,
                "flotilla_raft_snapshot_sends_total",
                "Snapshots this master started sending to a peer.",
            ),
            appends_streamed: appends_sent.with_label_values(&["stream"]),
            appends_called: appends_sent.with_label_values(&["call"]),
            append_stream_opens: counter(
                r,
                "flotilla_raft_append_stream_opens_total",
                "AppendEntries streams this master opened to peers: one per peer, and another after a timeout or a broken connection.",
            ),
            forwards_streamed: forwards_sent.with_label_values(&["stream"]),
            forwards_called: forwards_sent.with_label_values(&["call"]),
            leader_stream_opens: counter(
                r,
                "flotilla_raft_leader_stream_opens_total",
                "Streams this master opened to a leader for its forwarded writes and read indexes: one per leader, and another after a stall, an idle minute or a broken connection.",
            ),
            batch_commands: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "flotilla_raft_batch_commands",
                        "Client commands carried by one Raft log entry (group commit).",
                    )
                    .buckets(exponential_buckets(1.0, 2.0, 10).unwrap_or_default()),
                )
                .expect("valid metric"),
            ),
            forward_commands: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "flotilla_raft_forward_commands",
                        "Client writes a follower forwarded to the leader together (one message on its stream, or one call).",
                    )
                    .buckets(exponential_buckets(1.0, 2.0, 10).unwrap_or_default()),
                )
                .expect("valid metric"),
            ),
            read_batch_leader: read_batch.with_label_values(&["leader"]),
            read_batch_follower: read_batch.with_label_values(&["follower"]),
        })
    }
}

/// The Raft gauges are refreshed at most this often. openraft publishes its
/// metrics on every change, several times per write, and a refresh (a copy
/// of the metrics, every gauge set) cost 3.5% of a leader's CPU at one
/// client; Prometheus scrapes every few seconds.
const REFRESH_EVERY: Duration = Duration::from_millis(50);

/// Keep the Raft gauges in step with openraft's metrics (within
/// [`REFRESH_EVERY`]), and the database size fresh, until `stop`.
pub async fn follow(
    raft: Raft,
    store: Arc<KvStore>,
    m: Arc<StoreMetrics>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut rx = raft.metrics();
    let mut leader: Option<NodeId> = None;
    let mut size_tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = size_tick.tick() => {
                let s = store.clone();
                if let Ok((size, in_use)) = tokio::task::spawn_blocking(move || s.db_size()).await {
                    m.db_size.set(size);
                    m.db_in_use.set(in_use);
                }
                m.keys.set(store.live_keys() as i64);
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let r = rx.borrow_and_update().clone();
                if r.current_leader != leader {
                    if r.current_leader.is_some() {
                        m.leader_changes.inc();
                    }
                    leader = r.current_leader;
                }
                m.has_leader.set(i64::from(r.current_leader.is_some()));
                m.is_leader.set(i64::from(r.state == ServerState::Leader));
                m.term.set(r.current_term as i64);
                let last = r.last_log_index.unwrap_or(0);
                m.last_log_index.set(last as i64);
                m.snapshot_index
                    .set(r.snapshot.map(|l| l.index).unwrap_or(0) as i64);
                m.purged_index
                    .set(r.purged.map(|l| l.index).unwrap_or(0) as i64);
                let applied = r.last_applied.map(|l| l.index).unwrap_or(0);
                m.applied.set(applied as i64);
                let committed = match (&r.replication, r.state) {
                    (Some(rep), ServerState::Leader) => {
                        let voters: Vec<NodeId> = r.membership_config.membership().voter_ids().collect();
                        let mut matched: Vec<u64> = voters
                            .iter()
                            .map(|v| {
                                if *v == r.id {
                                    last
                                } else {
                                    rep.get(v).and_then(|l| l.map(|l| l.index)).unwrap_or(0)
                                }
                            })
                            .collect();
                        matched.sort_unstable_by(|a, b| b.cmp(a));
                        let quorum = voters.len() / 2;
                        matched.get(quorum).copied().unwrap_or(applied).max(applied)
                    }
                    _ => applied,
                };
                m.committed.set(committed as i64);
                m.follower_lag.reset();
                if let (Some(rep), ServerState::Leader) = (&r.replication, r.state) {
                    for (peer, l) in rep.iter() {
                        if *peer == r.id {
                            continue;
                        }
                        let matched = l.map(|l| l.index).unwrap_or(0);
                        m.follower_lag
                            .with_label_values(&[&format!("{peer:x}")])
                            .set(last.saturating_sub(matched) as i64);
                    }
                }
                // What changes meanwhile is taken in at the next refresh.
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(REFRESH_EVERY) => {}
                }
            }
        }
    }
}
