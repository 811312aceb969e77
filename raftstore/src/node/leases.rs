//! Lease calls answered by the leader: keep-alives, time-to-live queries,
//! and the revocation of expired leases.

use super::*;

impl Master {
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
    ///
    /// Leadership is confirmed by a quorum (a read index) before the answer:
    /// a leader cut off from its peers but still reachable by clients would
    /// otherwise answer "renewed" while the real leader lets the lease
    /// expire (etcd's issue 15247: two holders of one lock).
    pub(crate) async fn lease_keep_alive_local(&self, id: i64) -> Result<Option<i64>> {
        let term = self.leading().ok_or(Error::NoLeader)?;
        self.lease_clocks_for(term).await?;
        self.local_read_index().await?;
        if self.leading() != Some(term) {
            return Err(Error::NoLeader);
        }
        match self.lessor.renew(id) {
            Renewal::Renewed(ttl) => Ok(Some(ttl)),
            Renewal::Unknown => Ok(None),
            Renewal::Expired => {
                let deadline = tokio::time::Instant::now() + self.request_deadline();
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
            LeaseAnswer::Local => {
                if let Some(term) = self.leading() {
                    self.lease_clocks_for(term).await?;
                }
                Ok(self.lessor.remaining(id))
            }
            LeaseAnswer::Remote(r) => Ok(r.found.then_some((r.ttl, r.granted_ttl))),
        }
    }

    /// Seconds left (rounded up) and granted TTL of a lease on this
    /// master's own clock, without asking the leader; `None` when this
    /// replica knows no such lease (never granted, or revoked). Only the
    /// leader's clock decides expiry ([`Master::lease_time_to_live`]): a
    /// follower's runs from the grant (or from its own last term) and is
    /// restarted when it starts leading. Public for the tests of that
    /// restart (`tests/leadership.rs`), which watch a follower's clock run
    /// out.
    pub fn local_lease_remaining(&self, id: i64) -> Option<(i64, i64)> {
        self.lessor.remaining(id)
    }

    /// Find the leader for a lease query: this master, or the answer of the
    /// leader. Both queries are idempotent, so an attempt that hangs (its
    /// leader paused or cut off) is retried on the current leader.
    async fn lease_on_leader(&self, id: i64, renew: bool) -> Result<LeaseAnswer> {
        let deadline = tokio::time::Instant::now() + self.request_deadline();
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

    pub(super) fn revoke_expired(&self) {
        let Some(term) = self.leading() else {
            return;
        };
        if self.lessor.term() != Some(term) {
            // The clocks are still a follower's: not restarted for this term yet.
            return;
        }
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
                // The revocation is fenced with this term: applied only if
                // it is still this term's when its entry is.
                if me.leading() == Some(term) {
                    tracing::info!(lease = id, "lease expired; revoking");
                    let revoke = Command::Fenced {
                        term,
                        cmd: Box::new(Command::LeaseRevoke { id }),
                    };
                    match me.submit(revoke).await {
                        Ok(r) if matches!(r.outcome, Outcome::Fenced { .. }) => {
                            tracing::info!(lease = id, term, "not revoked: the term is over")
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(lease = id, error = %e, "revoking an expired lease failed; will retry")
                        }
                    }
                }
                me.revoking
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            });
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
