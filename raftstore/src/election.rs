//! When a master stands for election: Raft's election timer, with Pre-Vote.
//!
//! openraft 0.9 starts an election whenever a follower's timer runs out,
//! with no Pre-Vote. A master back from a pause (its timer ran out while it
//! was stopped) or from a partition (it heard no leader meanwhile) then
//! raises the term at once and deposes a healthy leader: one election of
//! unavailability for nothing. Here openraft's own timer is off and this
//! module decides instead:
//!
//! - a voter that has heard nothing from a leader for its timeout (the
//!   election timeout, randomized up to 1.2 times, drawn again each round)
//!   first asks the other voters (`RaftPeer.PreVote`) whether they too have
//!   heard no leader for (three quarters of) an election timeout;
//! - only if a majority (counting itself) says so does it start a real
//!   election (`Raft::trigger().elect()`), where openraft's vote rules
//!   decide, as before. Either way it waits a fresh timeout before the next
//!   round.
//!
//! Safety does not depend on this: it only gates when elections start.
//! "Heard from a leader" means an AppendEntries or InstallSnapshot that
//! openraft accepted (not answered with a higher vote), or a vote granted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::ServerState;
use rand::Rng;

use crate::node::Master;
use crate::types::{LogId, NodeId};

/// When this master last heard from a leader (or granted a vote).
pub struct Heard {
    start: Instant,
    /// Milliseconds after `start`.
    at: AtomicU64,
}

impl Default for Heard {
    fn default() -> Self {
        Heard {
            start: Instant::now(),
            at: AtomicU64::new(0),
        }
    }
}

impl Heard {
    /// Note contact with a leader now.
    pub fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.at.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long since the last contact (since start-up if none).
    pub fn silence(&self) -> Duration {
        let since = Duration::from_millis(self.at.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(since)
    }
}

/// A timeout for one round: `[e, 1.2 e)`.
fn round_timeout(e: u64) -> Duration {
    let e = e.max(1);
    Duration::from_millis(rand::thread_rng().gen_range(e..e + (e / 5).max(1)))
}

/// This master's last log id, for a Pre-Vote.
fn last_log_id(master: &Master) -> Option<LogId> {
    crate::log_store::last_log_id(master.store.db())
        .ok()
        .flatten()
}

/// Whether this master, asked by a candidate whose log ends at
/// `candidate_log`, agrees to an election: it is not the leader itself,
/// the candidate's log is at least as long as its own (else it would refuse
/// the real vote: only a master with the longest log can win), and it has
/// heard from no leader for three quarters of an election timeout. (Not a whole one: the candidate's own
/// timer started at the last heartbeat it got, maybe a little before this
/// master's, and a candidate refused for a few milliseconds would wait a
/// whole timeout more. A live leader is heard every 1.5 heartbeats.)
pub fn grants_prevote(master: &Master, candidate_log: Option<LogId>) -> bool {
    if master.raft.metrics().borrow().state == ServerState::Leader {
        return false;
    }
    if master.heard.silence() < Duration::from_millis(master.cfg.election_timeout_ms * 3 / 4) {
        return false;
    }
    candidate_log >= last_log_id(master)
}

/// The election timer of one master; runs until it shuts down.
pub(crate) async fn election_loop(master: Master) {
    let e = master.cfg.election_timeout_ms;
    let period = Duration::from_millis((master.cfg.heartbeat_interval_ms / 2).clamp(5, 50));
    let mut timeout = round_timeout(e);
    // This master's own last round. It restarts its timer, but it is not
    // contact with a leader: counting it as such would make two masters
    // that time out together refuse each other's Pre-Vote, round after
    // round.
    let mut last_round: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = master.shutdown.cancelled() => return,
        }
        let (voters, state) = {
            let m = master.raft.metrics();
            let m = m.borrow();
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            (voters, m.state)
        };
        if !voters.contains(&master.id) || state == ServerState::Leader {
            continue;
        }
        if voters.len() == 1 {
            // The only voter: nobody to ask, nobody to wait for.
            if state != ServerState::Candidate {
                let _ = master.raft.trigger().elect().await;
            }
            continue;
        }
        let idle = last_round.map_or(master.heard.silence(), |r| {
            r.elapsed().min(master.heard.silence())
        });
        if idle < timeout {
            continue;
        }
        let started = Instant::now();
        let granted = prevote(&master, &voters, e).await;
        // Whatever the outcome, a full timeout before the next round.
        last_round = Some(Instant::now());
        timeout = round_timeout(e);
        // A leader was heard of, or a vote granted, while the others were
        // asked: someone else stood first. Standing now would depose them.
        let contacted = master.heard.silence() < started.elapsed();
        if granted && contacted {
            tracing::debug!("pre-vote granted, but a leader or candidate spoke meanwhile");
        } else if granted {
            tracing::info!("no leader heard of by a majority: standing for election");
            if let Err(err) = master.raft.trigger().elect().await {
                tracing::warn!(error = %err, "could not start an election");
            }
        } else {
            tracing::debug!("pre-vote not granted by a majority: a leader is still heard of");
        }
    }
}

/// Ask the other voters; true as soon as a majority (counting this master)
/// grants, false as soon as one cannot (a master that does not answer,
/// paused or cut off, is not waited for once the others have).
async fn prevote(master: &Master, voters: &[NodeId], e: u64) -> bool {
    use futures::StreamExt as _;
    let last_log = bincode::serialize(&last_log_id(master)).unwrap_or_default();
    let addrs: Vec<(NodeId, String)> = {
        let m = master.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .nodes()
            .filter(|(id, _)| **id != master.id && voters.contains(id))
            .map(|(id, n)| (*id, n.peer_addr.clone()))
            .collect()
    };
    let limit = Duration::from_millis((e / 2).max(50));
    let mut asks: futures::stream::FuturesUnordered<_> = addrs
        .into_iter()
        .map(|(_, addr)| {
            let channels = master.channels.clone();
            let candidate = master.id;
            let last_log_id = last_log.clone();
            async move {
                let Ok(mut c) = channels.client(&addr) else {
                    return false;
                };
                let req = flotilla_proto::raft::PreVoteRequest {
                    candidate,
                    last_log_id,
                };
                matches!(
                    tokio::time::timeout(limit, c.pre_vote(req)).await,
                    Ok(Ok(r)) if r.get_ref().granted
                )
            }
        })
        .collect();
    let (mut yes, mut no) = (1, 0);
    while let Some(granted) = asks.next().await {
        if granted {
            yes += 1;
        } else {
            no += 1;
        }
        if yes * 2 > voters.len() {
            return true;
        }
        if no * 2 >= voters.len() {
            return false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_timeouts_stay_within_one_to_one_point_two_timeouts() {
        for _ in 0..1000 {
            let t = round_timeout(250);
            assert!(
                t >= Duration::from_millis(250) && t < Duration::from_millis(300),
                "{t:?}"
            );
        }
        assert!(round_timeout(1) >= Duration::from_millis(1));
    }

    #[test]
    fn silence_counts_from_the_last_touch() {
        let h = Heard {
            start: Instant::now() - Duration::from_secs(60),
            at: AtomicU64::new(0),
        };
        assert!(h.silence() >= Duration::from_secs(60));
        h.touch();
        assert!(h.silence() < Duration::from_secs(30));
    }
}
