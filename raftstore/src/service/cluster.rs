//! etcd's Cluster service: member list and removal. Adding members goes
//! through `flt cluster add-master` or `flotilla master --join`, which know
//! the new master's name.

use flotilla_proto::etcdserverpb as pb;
use tonic::{Request, Response, Status};

use crate::node::Master;

pub struct ClusterService {
    pub master: Master,
}

impl ClusterService {
    fn members(&self) -> Vec<pb::Member> {
        self.master
            .members()
            .into_iter()
            .map(|(id, a, learner)| pb::Member {
                id,
                name: a.name,
                peer_ur_ls: vec![format!("http://{}", a.peer_addr)],
                client_ur_ls: if a.client_addr.is_empty() {
                    vec![]
                } else {
                    vec![format!("http://{}", a.client_addr)]
                },
                is_learner: learner,
            })
            .collect()
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        _r: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(Status::unimplemented(
            "Flotilla adds masters by name: run `flotilla master --join ADDR ...` on the new master, or `flt cluster add-master NAME --peer-addr A --client-addr B`",
        ))
    }

    async fn member_remove(
        &self,
        r: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let id = r.into_inner().id;
        super::admin::remove_by_id(&self.master, id).await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: Some(self.master.header(self.master.store.revision())),
            members: self.members(),
        }))
    }

    async fn member_update(
        &self,
        _r: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(Status::unimplemented(
            "a master's addresses change by restarting it with new flags; it re-registers itself",
        ))
    }

    async fn member_list(
        &self,
        _r: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.master.header(self.master.store.revision())),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        _r: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(Status::failed_precondition(
            "Flotilla promotes a learner by itself once it has caught up",
        ))
    }
}
