//! Flotilla's cluster administration service (`flt cluster ...`).

use std::net::SocketAddr;
use std::time::Duration;

use flotilla_proto::cluster as pb;
use flotilla_proto::cluster::cluster_admin_client::ClusterAdminClient;
use openraft::ServerState;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::node::Master;
use crate::types::{node_id_from_name, MemberAddrs, NodeId};

pub struct AdminService {
    pub master: Master,
}

pub fn member_infos(m: &Master) -> Vec<pb::MemberInfo> {
    m.members()
        .into_iter()
        .map(|(id, a, learner)| pb::MemberInfo {
            id,
            name: a.name,
            peer_addr: a.peer_addr,
            client_addr: a.client_addr,
            kind: if learner { "learner" } else { "voter" }.into(),
        })
        .collect()
}

/// A client for the leader's admin service, when this master is not the leader.
pub async fn leader_admin(
    m: &Master,
) -> Result<Option<ClusterAdminClient<tonic::transport::Channel>>, Status> {
    if m.is_leader() {
        return Ok(None);
    }
    let (lid, _) = m.current_leader().ok_or(Error::NoLeader)?;
    let addr = m
        .members()
        .into_iter()
        .find(|(id, _, _)| *id == lid)
        .map(|(_, a, _)| a.client_addr)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            Error::Unavailable("the leader has not registered its client address yet; retry".into())
        })?;
    let ch = crate::transport::endpoint(&addr, m.cfg.security.client_client.as_ref())
        .map_err(Error::Internal)?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| Error::Unavailable(format!("cannot reach the leader at {addr}: {e}")))?;
    Ok(Some(ClusterAdminClient::new(ch)))
}

fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "master name {name:?} is invalid: use 1-63 letters, digits, '-', '_' or '.'"
        )))
    }
}

fn check_addr(field: &str, a: &str) -> Result<(), Error> {
    a.parse::<SocketAddr>().map(|_| ()).map_err(|_| {
        Error::InvalidArgument(format!("{field} {a:?} is not HOST:PORT with an IP address"))
    })
}

pub async fn remove_by_id(m: &Master, id: NodeId) -> Result<(), Status> {
    if let Some(mut leader) = leader_admin(m).await? {
        let name = m
            .members()
            .into_iter()
            .find(|(i, _, _)| *i == id)
            .map(|(_, a, _)| a.name)
            .ok_or_else(|| Error::NotFound("etcdserver: member not found".into()))?;
        leader
            .remove_master(pb::RemoveMasterRequest { name })
            .await?;
        return Ok(());
    }
    m.remove_master(id).await?;
    Ok(())
}

#[tonic::async_trait]
impl pb::cluster_admin_server::ClusterAdmin for AdminService {
    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let m = &self.master;
        let metrics = m.raft.metrics().borrow().clone();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        Ok(Response::new(pb::StatusResponse {
            id: m.id,
            name: m.cfg.name.clone(),
            peer_addr: m.cfg.peer_addr.to_string(),
            client_addr: m.cfg.client_addr.to_string(),
            role: role.into(),
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            leader_id: metrics.current_leader.unwrap_or(0),
            members: member_infos(m),
            revision: m.store.revision(),
            snapshot_index: metrics.snapshot.map(|l| l.index).unwrap_or(0),
        }))
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn add_master(
        &self,
        req: Request<pb::AddMasterRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let r = req.into_inner();
        check_name(&r.name)?;
        check_addr("peer_addr", &r.peer_addr)?;
        check_addr("client_addr", &r.client_addr)?;
        let m = &self.master;
        let id = node_id_from_name(&r.name);
        if let Some((_, a, _)) = m.members().into_iter().find(|(i, _, _)| *i == id) {
            if a.peer_addr != r.peer_addr {
                return Err(Error::FailedPrecondition(format!(
                    "a master named {} already exists with peer address {}",
                    r.name, a.peer_addr
                ))
                .into());
            }
        }
        if let Some(mut leader) = leader_admin(m).await? {
            return leader.add_master(r).await;
        }
        m.add_master(MemberAddrs {
            name: r.name,
            peer_addr: r.peer_addr,
            client_addr: r.client_addr,
        })
        .await?;
        Ok(Response::new(pb::MembershipResponse {
            members: member_infos(m),
        }))
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn remove_master(
        &self,
        req: Request<pb::RemoveMasterRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let name = req.into_inner().name;
        let m = &self.master;
        let id = m
            .members()
            .into_iter()
            .find(|(_, a, _)| a.name == name)
            .map(|(i, _, _)| i)
            .ok_or_else(|| Error::NotFound(format!("no master named {name:?} in the cluster")))?;
        remove_by_id(m, id).await?;
        Ok(Response::new(pb::MembershipResponse {
            members: member_infos(m),
        }))
    }
}
