//! etcd's Maintenance service: status, alarms, defragment, hash.

use std::io::Read;
use std::pin::Pin;

use flotilla_proto::etcdserverpb as pb;
use futures::Stream;
use openraft::ServerState;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::blocking;
use crate::error::Error;
use crate::node::Master;

/// The etcd API version Flotilla speaks.
pub const ETCD_API_VERSION: &str = "3.4.0";

/// Bytes of a backup per message.
const CHUNK: usize = 1 << 20;

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

    type SnapshotStream =
        Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send + 'static>>;

    /// A backup ([`crate::backup::save`]), streamed in 1 MiB chunks.
    #[tracing::instrument(level = "info", skip_all)]
    async fn snapshot(
        &self,
        _r: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let m = &self.master;
        let header = m.header(m.store.revision());
        let (file, len) = crate::backup::save(m).await?;
        tracing::info!(bytes = len, revision = header.revision, "sending a backup");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut file = file;
            let mut left = len;
            let mut first = Some(header);
            loop {
                let mut blob = vec![0u8; CHUNK.min(left as usize)];
                if let Err(e) = file.read_exact(&mut blob) {
                    let _ =
                        tx.blocking_send(Err(Status::internal(format!("reading the backup: {e}"))));
                    return;
                }
                left -= blob.len() as u64;
                let msg = pb::SnapshotResponse {
                    header: first.take(),
                    remaining_bytes: left,
                    blob,
                };
                if tx.blocking_send(Ok(msg)).is_err() || left == 0 {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn move_leader(
        &self,
        r: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        use crate::node::TransferError;
        let m = &self.master;
        match m.move_leader(r.into_inner().target_id).await {
            Ok(()) => Ok(Response::new(pb::MoveLeaderResponse {
                header: Some(m.header(m.store.revision())),
            })),
            Err(e @ TransferError::NotLeader) => Err(Status::failed_precondition(e.to_string())),
            Err(e @ TransferError::BadTransferee) => {
                Err(Status::failed_precondition(e.to_string()))
            }
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }
}
