//! Linearizable reads: a read index confirmed by a quorum of heartbeats,
//! never a clock-based lease, then a wait until this master has applied it.
//!
//! Reads share read indexes, as etcd's do. On the leader, every read that
//! arrives while a quorum check is in flight shares the next check. On a
//! follower, every read that arrives while a `ReadIndex` call to the leader
//! is in flight shares the next call, which the leader answers from its own
//! next check. A read never joins a check or call that started before it
//! arrived: the index it gets was read after the read began, which is what
//! makes it linearizable. The calls are messages on the follower's stream
//! to the leader ([`super::link`]). Unshared, each of a follower's reads cost a gRPC
//! call on both masters, and a client spreads its reads over every master:
//! at 256 clients, two of three reads came that way (bench/RESULTS.md).

use super::link::LinkError;
use super::*;

/// A follower's `ReadIndex` calls under way at once, at most. One, as
/// etcd's followers do: at 256 clients, one call at a time gave 18,051-
/// 28,691 linearizable reads/s, four 20,900-22,950, and a call per read
/// (before) 15,831-21,184; at 16 clients four was the slowest
/// (bench/RESULTS.md).
const READS_IN_FLIGHT: usize = 1;

/// Who waits for a read index.
pub(crate) type ReadWaiter = oneshot::Sender<Result<u64>>;

/// A follower's read waiting for the leader's read index.
pub(super) struct RemoteRead {
    leader: NodeId,
    node: MasterNode,
    deadline: tokio::time::Instant,
    tx: ReadWaiter,
}

impl Master {
    /// Wait until this master has applied everything committed before the
    /// call: a read after this is linearizable (read index, confirmed by a
    /// quorum of heartbeats, never a clock-based lease).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn linearize(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.request_deadline();
        let index = loop {
            let (leader, node) = self.wait_for_leader(deadline).await?;
            let r = if leader == self.id {
                self.local_read_index().await
            } else {
                match self.remote_read_index(leader, node, deadline).await {
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
    pub(crate) async fn local_read_index(&self) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.read_tx
            .send(tx)
            .map_err(|_| Error::Unavailable("master is shutting down".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("master is shutting down".into()))?
    }

    /// The read index of `leader` (at `node`), asked by this follower in a
    /// call shared by every read that arrived before the call started.
    async fn remote_read_index(
        &self,
        leader: NodeId,
        node: MasterNode,
        deadline: tokio::time::Instant,
    ) -> Result<u64> {
        let (tx, rx) = oneshot::channel();
        let read = RemoteRead {
            leader,
            node,
            deadline,
            tx,
        };
        hand_over(&self.remote_reads, read, rx, deadline).await
    }

    /// Answer the leader's reads: one quorum check for all the reads queued
    /// when it starts, one check at a time.
    pub(super) async fn read_index_loop(self, rx: mpsc::UnboundedReceiver<ReadWaiter>) {
        let mut queue = Batches::new(rx, 1);
        loop {
            let next = tokio::select! {
                next = queue.first() => next,
                // Holding `self` must not keep the master (and its database) alive.
                _ = self.shutdown.cancelled() => return,
            };
            let Some((_permit, first)) = next else {
                return;
            };
            let waiters = queue.fill(first, usize::MAX, usize::MAX, |_| 0, |_, _| true);
            self.metrics.read_batch_leader.observe(waiters.len() as f64);
            let res = match self.raft.get_read_log_id().await {
                Ok((read, _applied)) => Ok(read.map(|l| l.index).unwrap_or(0)),
                Err(e) => Err(Error::Unavailable(e.to_string())),
            };
            for w in waiters {
                let _ = w.send(shared(&res));
            }
        }
    }

    /// Answer a follower's reads: one `ReadIndex` call to the leader for all
    /// the reads queued when it starts, [`READS_IN_FLIGHT`] under way.
    pub(super) async fn remote_read_loop(self, rx: mpsc::UnboundedReceiver<RemoteRead>) {
        let mut queue = Batches::new(rx, READS_IN_FLIGHT);
        loop {
            let next = tokio::select! {
                next = queue.first() => next,
                _ = self.shutdown.cancelled() => return,
            };
            let Some((permit, first)) = next else {
                return;
            };
            // All to one leader, unless leadership moved while they queued.
            let mut group = queue.fill(
                first,
                usize::MAX,
                usize::MAX,
                |_| 0,
                |a, b| a.leader == b.leader,
            );
            // A read that gave up (its deadline passed) needs no answer.
            group.retain(|r| !r.tx.is_closed());
            if group.is_empty() {
                continue;
            }
            let me = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                tokio::select! {
                    () = me.ask_leader(group) => {}
                    _ = me.shutdown.cancelled() => {}
                }
            });
        }
    }

    /// One `ReadIndex` call to the leader of `group`, answered to all of it.
    async fn ask_leader(&self, group: Vec<RemoteRead>) {
        let Some(first) = group.first() else {
            return;
        };
        let (leader, node) = (first.leader, first.node.clone());
        // The call may take as long as the most patient read allows; the
        // others stop waiting at their own deadlines.
        let deadline = group
            .iter()
            .map(|r| r.deadline)
            .max()
            .unwrap_or(first.deadline);
        self.metrics.read_batch_follower.observe(group.len() as f64);
        let ask = async {
            let asked = self.links.read_index(&node.peer_addr);
            match tokio::time::timeout_at(deadline, asked).await {
                Err(_) => Err(Error::Timeout),
                Ok(Ok(i)) => Ok(i),
                Ok(Err(LinkError::Refused)) => {
                    self.metrics.forwards_called.inc();
                    self.read_index_call(&node.peer_addr, deadline).await
                }
                Ok(Err(LinkError::Failed(why))) => Err(Error::Unavailable(why)),
            }
        };
        let res = self.unless_replaced(leader, &node, ask).await;
        for r in group {
            let _ = r.tx.send(shared(&res));
        }
    }

    /// The read index of the leader at `addr`, asked with a `ReadIndex`
    /// call (it serves no stream).
    async fn read_index_call(&self, addr: &str, deadline: tokio::time::Instant) -> Result<u64> {
        let mut c = self.channels.client(addr).map_err(Error::Unavailable)?;
        match tokio::time::timeout_at(deadline, c.read_index(ReadIndexRequest {})).await {
            Err(_) => Err(Error::Timeout),
            Ok(Ok(r)) => Ok(r.into_inner().index),
            Ok(Err(s)) => Err(Error::Unavailable(s.message().to_string())),
        }
    }
}

/// One read's copy of the answer that its batch shares: a timeout stays a
/// timeout (the caller gives up), anything else is worth a retry.
fn shared(res: &Result<u64>) -> Result<u64> {
    match res {
        Ok(i) => Ok(*i),
        Err(Error::Timeout) => Err(Error::Timeout),
        Err(e) => Err(Error::Unavailable(e.to_string())),
    }
}
