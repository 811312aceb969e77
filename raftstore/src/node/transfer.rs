//! Leadership transfer (`etcdctl move-leader`), which openraft 0.9 does not
//! offer, built on its runtime switches and an election trigger, the way
//! Raft's thesis describes it (3.10):
//!
//! 1. the leader stops taking new entries (the batcher holds proposals)
//!    and stops its heartbeats;
//! 2. it waits until the transferee's log matches its own;
//! 3. it waits out the voters' leader lease (openraft's
//!    `election_timeout_max`), during which they refuse any candidate;
//! 4. it asks the transferee to stand at once (`RaftPeer.TimeoutNow`),
//!    which, with the longest log, wins; the old leader steps down on the
//!    higher term, and its held proposals go to the new leader.
//!
//! Heartbeats and proposals resume whatever happens. If the transferee has
//! not won within two election timeouts the call fails (etcd's "leader
//! transfer took too long"), and the voters' own timers elect a leader as
//! after any silence.

use super::*;
use flotilla_proto::raft::TimeoutNowRequest;

/// Why a transfer was refused or failed, in etcd's words where etcd has them.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: bad leader transferee")]
    BadTransferee,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    TookTooLong,
    #[error("leader transfer: {0}")]
    Failed(String),
}

/// Holds new proposals while set (step 1 above).
#[derive(Default)]
pub struct Hold {
    held: tokio::sync::watch::Sender<bool>,
}

impl Hold {
    /// Resolves once proposals may go on.
    pub(super) async fn released(&self) {
        let mut rx = self.held.subscribe();
        let _ = rx.wait_for(|held| !*held).await;
    }

    fn set(&self, held: bool) {
        self.held.send_replace(held);
    }
}

/// Undoes step 1 when the transfer ends, however it ends.
struct Resume<'a>(&'a Master);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        self.0.raft.runtime_config().heartbeat(true);
        self.0.hold.set(false);
    }
}

impl Master {
    /// Make `target` the leader. Called on the leader.
    pub async fn move_leader(&self, target: NodeId) -> std::result::Result<(), TransferError> {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Err(TransferError::NotLeader);
        }
        if target == self.id {
            return Ok(());
        }
        let Some(node) = m.membership_config.membership().get_node(&target).cloned() else {
            return Err(TransferError::BadTransferee);
        };
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == target)
        {
            return Err(TransferError::BadTransferee);
        }
        let term = m.current_term;
        let e = Duration::from_millis(self.cfg.election_timeout_ms);
        tracing::info!(
            target = format!("{target:x}"),
            term,
            "transferring leadership"
        );
        self.hold.set(true);
        self.raft.runtime_config().heartbeat(false);
        let _resume = Resume(self);

        // The transferee catches up with everything appended so far.
        let mut rx = self.raft.metrics();
        let caught_up = tokio::time::timeout(
            2 * e,
            rx.wait_for(|m| {
                let last = m.last_log_index;
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&target).cloned())
                    .flatten()
                    .map(|l| l.index)
                    == last
            }),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        if !caught_up {
            return Err(TransferError::Failed(format!(
                "{} did not catch up within {:?}",
                node.name,
                2 * e
            )));
        }
        // openraft's voters refuse any candidate for `election_timeout_max`
        // after hearing from their leader (see `openraft_election`).
        let (_, lease_ms) = openraft_election(self.cfg.election_timeout_ms);
        tokio::time::sleep(Duration::from_millis(
            lease_ms + self.cfg.heartbeat_interval_ms,
        ))
        .await;

        let mut c = self
            .channels
            .client(&node.peer_addr)
            .map_err(TransferError::Failed)?;
        let reply = tokio::time::timeout(
            e,
            c.timeout_now(TimeoutNowRequest {
                leader: self.id,
                term,
            }),
        )
        .await
        .map_err(|_| TransferError::Failed(format!("{} did not answer", node.name)))?
        .map_err(|s| TransferError::Failed(format!("{}: {}", node.name, s.message())))?
        .into_inner();
        if !reply.started {
            return Err(TransferError::Failed(format!(
                "{} did not stand: {}",
                node.name, reply.error
            )));
        }
        let won = tokio::time::timeout(
            2 * e,
            rx.wait_for(|m| m.current_leader == Some(target) && m.current_term > term),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        match won {
            true => {
                tracing::info!(target = format!("{target:x}"), "leadership transferred");
                Ok(())
            }
            false => Err(TransferError::TookTooLong),
        }
    }

    /// Stand for election now, at the leader's request (`TimeoutNow`).
    pub(crate) async fn stand_now(
        &self,
        leader: NodeId,
        term: u64,
    ) -> std::result::Result<(), String> {
        let m = self.raft.metrics().borrow().clone();
        if m.current_term != term || m.current_leader != Some(leader) {
            return Err(format!(
                "the request is from leader {leader:x} in term {term}, but this master is in term {} with leader {:?}",
                m.current_term,
                m.current_leader.map(|l| format!("{l:x}"))
            ));
        }
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id)
        {
            return Err("this master is not a voter".into());
        }
        tracing::info!(
            leader = format!("{leader:x}"),
            term,
            "standing for election at the leader's request"
        );
        self.raft.trigger().elect().await.map_err(|e| e.to_string())
    }
}
