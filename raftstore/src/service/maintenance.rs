//! etcd's Maintenance service: status, alarms, defragment, hash.

use flotilla_proto::etcdserverpb as pb;
use openraft::ServerState;
use tonic::{Request, Response, Status};

use super::blocking;
use crate::error::Error;
use crate::node::Master;

/// The etcd API version Flotilla speaks.
pub const ETCD_API_VERSION: &str = "3.4.0";

pub struct MaintenanceService {
    pub master: Master,
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        _r: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        Ok(Response::new(pb::AlarmResponse {
            header: Some(self.master.header(self.master.store.revision())),
            alarms: vec![],
        }))
    }

    async fn status(
        &self,
        _r: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let m = &self.master;
        let metrics = m.raft.metrics().borrow().clone();
        let store = m.store.clone();
        let (size, in_use) = blocking(move || store.db_size()).await?;
        Ok(Response::new(pb::StatusResponse {
            header: Some(m.header(m.store.revision())),
            version: ETCD_API_VERSION.into(),
            db_size: size,
            leader: metrics.current_leader.unwrap_or(0),
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            errors: vec![],
            db_size_in_use: in_use,
            is_learner: metrics.state == ServerState::Learner,
        }))
    }

    async fn defragment(
        &self,
        _r: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        let db = self.master.store.db().clone();
        blocking(move || {
            for name in crate::engine::SM_CFS {
                db.compact_range_cf(crate::engine::cf(&db, name), None::<&[u8]>, None::<&[u8]>);
            }
        })
        .await?;
        Ok(Response::new(pb::DefragmentResponse {
            header: Some(self.master.header(self.master.store.revision())),
        }))
    }

    async fn hash_kv(
        &self,
        r: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let m = &self.master;
        let cur = m.store.revision();
        let asked = r.into_inner().revision;
        let rev = if asked <= 0 { cur } else { asked.min(cur) };
        let store = m.store.clone();
        let hash = blocking(move || store.hash_kv(rev))
            .await?
            .map_err(Error::from)?;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(m.header(cur)),
            hash,
            compact_revision: m.store.compact_revision(),
        }))
    }

    async fn move_leader(
        &self,
        _r: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        Err(Status::unimplemented(
            "leadership transfer is not supported yet",
        ))
    }
}
