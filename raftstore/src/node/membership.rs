//! Membership: admitting and removing masters, the member directory, and
//! finishing a change that a crashed leader left joint.

use super::*;

impl Master {
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
    pub(super) fn joint_goal(&self) -> Option<BTreeSet<NodeId>> {
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
    pub(super) async fn finish_joint_membership(&self, goal: BTreeSet<NodeId>) {
        tracing::warn!(voters = ?goal, "finishing a membership change left joint");
        match self
            .change_membership(ChangeMembers::ReplaceAllVoters(goal))
            .await
        {
            Ok(()) => tracing::info!("membership change finished"),
            Err(e) => tracing::warn!(error = %e, "could not finish the membership change yet"),
        }
    }

    pub(super) async fn join_loop(self) {
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
                let ep = match crate::transport::endpoint(
                    addr,
                    self.cfg.security.client_client.as_ref(),
                ) {
                    Ok(ep) => ep,
                    Err(e) => {
                        tracing::error!(addr, error = %e, "bad --join address");
                        continue;
                    }
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

    /// Drop directory entries of masters that are no longer members.
    pub(super) async fn forget_removed_members(&self) {
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

    pub(super) async fn register_self(&self) -> bool {
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
}
