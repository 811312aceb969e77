//! Leadership as a stream: `Some(term)` while this master leads in `term`,
//! `None` otherwise, pushed on every change of Raft's state (no polling).
//! Leader-only duties start and stop on it, and lease clocks restart on the
//! term change itself.

use tokio::sync::watch;

use super::*;

/// The term this master leads in, from Raft's metrics.
fn leading_term(m: &openraft::RaftMetrics<NodeId, MasterNode>) -> Option<u64> {
    (m.state == ServerState::Leader).then_some(m.current_term)
}

/// Follow Raft's metrics into a leadership stream. The stream says `None`
/// for good once Raft stops.
pub(super) fn follow(raft: &Raft) -> watch::Receiver<Option<u64>> {
    let mut metrics = raft.metrics();
    let (tx, rx) = watch::channel(leading_term(&metrics.borrow()));
    tokio::spawn(async move {
        while metrics.changed().await.is_ok() {
            let now = leading_term(&metrics.borrow_and_update());
            tx.send_if_modified(|t| {
                let changed = *t != now;
                *t = now;
                changed
            });
        }
        tx.send_replace(None);
    });
    rx
}

impl Master {
    /// Leadership as a stream: `Some(term)` while this master leads in
    /// `term`. A loop started for a term carries it as its fence (see
    /// [`crate::types::Command::Fenced`]), so that none of its writes lands
    /// once the term is over.
    pub fn leadership(&self) -> watch::Receiver<Option<u64>> {
        self.leadership.clone()
    }

    /// The term this master leads in now, as Raft reports it.
    pub fn leading(&self) -> Option<u64> {
        leading_term(&self.raft.metrics().borrow())
    }

    /// Give every lease a full TTL when this master starts leading in a new
    /// term (as etcd does), before any lease call of that term is answered:
    /// the clocks a follower kept are not the leader's. Idempotent per term.
    pub(crate) async fn lease_clocks_for(&self, term: u64) -> Result<()> {
        if self.lessor.term() == Some(term) {
            return Ok(());
        }
        // The log may still hold unapplied entries of earlier terms, such
        // as a revoke that a leader of an earlier term (this master, maybe)
        // fenced with that term and appended, and that this term commits.
        // The clocks restart from the leases left once those are applied:
        // the read index is at least this term's first entry. Otherwise a
        // lease renewed now would be revoked by the older entry right after
        // (the chaos tests' lossy nemesis found it).
        let index = self.local_read_index().await?;
        self.raft
            .wait(Some(self.request_deadline()))
            .applied_index_at_least(Some(index), "entries of earlier terms")
            .await
            .map_err(|_| Error::Timeout)?;
        if self.leading() != Some(term) {
            return Err(Error::NoLeader);
        }
        // Grants and revokes applied while the leases are read are kept
        // (see `ResetTicket`).
        let lessor = self.lessor.clone();
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let ticket = lessor.begin_reset();
            let leases = store.leases()?;
            lessor.finish_reset_for_term(ticket, term, &leases);
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        Ok(())
    }

    /// Restart the lease clocks on every term change to leader.
    pub(super) async fn lease_clock_loop(self) {
        let mut lead = self.leadership();
        loop {
            let term = *lead.borrow_and_update();
            if let Some(term) = term {
                // Retried while this term lasts: until the clocks restart,
                // no lease of the term expires. Just after an election the
                // read index may still be refused ("no leader"): that is
                // retried quietly, and only a failure that lasts warns.
                let since = tokio::time::Instant::now();
                let mut warned = false;
                while let Err(e) = self.lease_clocks_for(term).await {
                    if self.leading() != Some(term) {
                        break;
                    }
                    if !warned && since.elapsed() >= self.request_deadline() {
                        warned = true;
                        tracing::warn!(
                            term,
                            error = %e,
                            waited_s = since.elapsed().as_secs(),
                            "could not restart the lease clocks; retrying"
                        );
                    } else {
                        tracing::debug!(term, error = %e, "could not restart the lease clocks yet; retrying");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = self.shutdown.cancelled() => return,
                    }
                }
            }
            tokio::select! {
                r = lead.changed() => if r.is_err() { return },
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}
