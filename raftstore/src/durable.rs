//! How far this master's Raft log is on disk, so that the leader's own
//! fsync can overlap replication without a write becoming visible before
//! a majority holds it durably.
//!
//! openraft 0.9 runs the leader's append inside RaftCore and replicates an
//! entry only once the append's flush is reported, so leader fsync, round
//! trip and follower fsync happen in series, and RaftCore does nothing else
//! while the leader fsyncs. The log store therefore reports the leader's
//! own appends as flushed as soon as they are written (see
//! `log_store::LogStore::append`); RaftCore replicates at once and the
//! leader's fsync runs beside the followers'. openraft then counts the
//! leader in a quorum before its fsync, so what it calls committed may be
//! durable on only one follower. Four rules keep that invisible:
//!
//! - **apply**: the state machine applies nothing that this master has not
//!   fsynced ([`Durability::wait_synced`]), so no client is answered, and
//!   no read on the leader sees an entry, before the leader and one
//!   follower, a majority of three, hold it;
//! - **commit index**: the transport tells followers of no commit past what
//!   the leader has fsynced ([`Durability::clamp_commit`]), so no follower
//!   applies (or serves) such an entry either; once the fsync is done a
//!   heartbeat carries the held-back commit ([`Durability::held_back`]);
//! - **restart**: the committed index is stored in the same RocksDB WAL
//!   after the entries it covers, so recovery (a prefix of the WAL) never
//!   finds a committed index past the log;
//! - **leader restart**: a power loss may take from the leader's log
//!   entries that a follower holds under the same term, so a master that
//!   led restarts as a candidate and leads again only in a new term, whose
//!   entries replace the lost ones ([`crate::log_store::restarted_vote`]);
//!   leading on in the old term, as openraft would, it would write other
//!   entries under the same log ids, and the replicas would diverge.
//!
//! This is the overlap of the Raft thesis (§10.2.1, "the leader can write
//! to its disk in parallel with replicating to the followers"), kept
//! stricter: an entry is visible only once the leader has it on disk too.
//!
//! Log ids, not indexes, are compared: an entry a follower truncated and
//! replaced has a newer term, so an fsync of the old one never counts for
//! its replacement; a truncation also lowers what is known to be synced.

use std::sync::Mutex;

use tokio::sync::watch;

use crate::types::LogId;

/// What is known to be on disk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Synced {
    /// The last entry covered by a completed fsync (`None`: nothing yet).
    pub upto: Option<LogId>,
    /// An fsync failed: nothing after `upto` will ever be known durable,
    /// and whoever waits must fail (openraft then stops this master's Raft).
    pub failed: Option<String>,
}

#[derive(Debug, Default)]
struct Written {
    /// The last entry written to the log (maybe not yet fsynced).
    last: Option<LogId>,
    /// Bumped by every truncation: an fsync that started before one must
    /// not publish what it read before it.
    epoch: u64,
}

/// Shared by the log store (which writes and fsyncs), the state machine
/// (which waits) and the transport (which clamps the commit index).
#[derive(Debug)]
pub struct Durability {
    written: Mutex<Written>,
    synced: watch::Sender<Synced>,
    /// The highest commit index the transport held back; a heartbeat is
    /// due once it is synced.
    held: Mutex<Option<LogId>>,
    /// Wakes the heartbeat task when an fsync completes with commits held back.
    heartbeat: tokio::sync::Notify,
}

/// A snapshot of the written position, taken before an fsync.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    last: Option<LogId>,
    epoch: u64,
}

impl Durability {
    /// A log whose entries up to `last` are on disk (at start, after an fsync).
    pub fn new(last: Option<LogId>) -> Self {
        Durability {
            written: Mutex::new(Written { last, epoch: 0 }),
            synced: watch::channel(Synced {
                upto: last,
                failed: None,
            })
            .0,
            held: Mutex::new(None),
            heartbeat: tokio::sync::Notify::new(),
        }
    }

    fn written(&self) -> std::sync::MutexGuard<'_, Written> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries up to `last` have been written (not yet fsynced).
    pub fn wrote(&self, last: LogId) {
        let mut w = self.written();
        if w.last < Some(last) {
            w.last = Some(last);
        }
    }

    /// The log was truncated; `last` is its last entry now.
    pub fn truncated(&self, last: Option<LogId>) {
        let mut w = self.written();
        w.last = last;
        w.epoch += 1;
        self.synced.send_if_modified(|s| {
            if s.upto > last {
                s.upto = last;
                true
            } else {
                false
            }
        });
    }

    /// What an fsync starting now will cover.
    pub fn mark(&self) -> Mark {
        let w = self.written();
        Mark {
            last: w.last,
            epoch: w.epoch,
        }
    }

    /// An fsync that started at `mark` completed. Returns false if a
    /// truncation happened meanwhile (nothing is published: fsync again).
    pub fn synced(&self, mark: Mark) -> bool {
        let w = self.written();
        if w.epoch != mark.epoch {
            return false;
        }
        self.synced.send_if_modified(|s| {
            if s.upto < mark.last {
                s.upto = mark.last;
                true
            } else {
                false
            }
        });
        drop(w);
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_some() && *held <= mark.last {
            self.heartbeat.notify_one();
        }
        true
    }

    /// An fsync failed: every waiter fails from now on.
    pub fn failed(&self, error: String) {
        self.synced.send_modify(|s| {
            if s.failed.is_none() {
                s.failed = Some(error);
            }
        });
    }

    /// What is known to be on disk now.
    #[cfg(test)]
    pub fn current(&self) -> Synced {
        self.synced.borrow().clone()
    }

    /// Wait until `id` is on disk; `Err` if an fsync failed first.
    pub async fn wait_synced(&self, id: LogId) -> Result<(), String> {
        let mut rx = self.synced.subscribe();
        let r = rx
            .wait_for(|s| s.failed.is_some() || s.upto >= Some(id))
            .await;
        match r {
            Ok(s) => match &s.failed {
                Some(e) if s.upto < Some(id) => Err(e.clone()),
                _ => Ok(()),
            },
            // The sender lives as long as `self`.
            Err(_) => Err("log durability closed".into()),
        }
    }

    /// The commit index to tell a follower: `committed`, or what this
    /// master has fsynced if that is less (remembered, so that a heartbeat
    /// follows the fsync).
    pub fn clamp_commit(&self, committed: Option<LogId>) -> Option<LogId> {
        let synced = self.synced.borrow().upto;
        if committed <= synced {
            return committed;
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if *held < committed {
            *held = committed;
        }
        synced
    }

    /// Wait until a held-back commit index is on disk, and forget it: the
    /// caller sends a heartbeat, which carries it.
    pub async fn held_back(&self) {
        loop {
            let notified = self.heartbeat.notified();
            {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                if held.is_some() && *held <= self.synced.borrow().upto {
                    *held = None;
                    return;
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::time::Duration;

    fn id(term: u64, index: u64) -> LogId {
        openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index)
    }

    #[tokio::test]
    async fn an_entry_is_synced_only_once_an_fsync_started_after_its_write_completes() {
        let d = Durability::new(Some(id(1, 3)));
        assert!(d.wait_synced(id(1, 3)).await.is_ok());
        let before = d.mark();
        d.wrote(id(1, 5));
        assert!(d.synced(before));
        assert!(
            d.wait_synced(id(1, 5)).now_or_never().is_none(),
            "synced by an fsync that began before the write"
        );
        let after = d.mark();
        assert!(d.synced(after));
        assert!(d.wait_synced(id(1, 5)).await.is_ok());
        assert_eq!(d.current().upto, Some(id(1, 5)));
    }

    #[tokio::test]
    async fn a_truncation_during_an_fsync_publishes_nothing_and_lowers_what_is_synced() {
        let d = Durability::new(Some(id(1, 10)));
        d.wrote(id(1, 12));
        let m = d.mark();
        // A new leader's entries replace 9.. while the fsync runs.
        d.truncated(Some(id(1, 8)));
        assert_eq!(d.current().upto, Some(id(1, 8)));
        d.wrote(id(2, 9));
        assert!(
            !d.synced(m),
            "an fsync across a truncation must not publish"
        );
        assert_eq!(d.current().upto, Some(id(1, 8)));
        // The replacement of index 9 is a newer term: an fsync of the old 10 never covers it.
        assert!(d.wait_synced(id(2, 9)).now_or_never().is_none());
        let m = d.mark();
        assert!(d.synced(m));
        assert!(d.wait_synced(id(2, 9)).await.is_ok());
    }

    #[tokio::test]
    async fn a_failed_fsync_fails_the_waiters_past_what_was_synced() {
        let d = Durability::new(Some(id(1, 1)));
        d.wrote(id(1, 2));
        d.failed("disk gone".into());
        assert_eq!(d.wait_synced(id(1, 2)).await, Err("disk gone".into()));
        assert!(d.wait_synced(id(1, 1)).await.is_ok());
    }

    #[tokio::test]
    async fn a_held_back_commit_is_reported_once_it_is_synced() {
        let d = std::sync::Arc::new(Durability::new(Some(id(1, 1))));
        assert_eq!(d.clamp_commit(Some(id(1, 1))), Some(id(1, 1)));
        d.wrote(id(1, 4));
        assert_eq!(d.clamp_commit(Some(id(1, 4))), Some(id(1, 1)));
        let mut waiter = Box::pin(d.held_back());
        assert!((&mut waiter).now_or_never().is_none(), "nothing synced yet");
        let m = d.mark();
        d.synced(m);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the heartbeat task was not woken");
        assert_eq!(d.clamp_commit(Some(id(1, 4))), Some(id(1, 4)));
    }
}
