//! etcd's Lease service.

use std::pin::Pin;

use flotilla_proto::etcdserverpb as pb;
use futures::Stream;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::blocking;
use crate::error::Error;
use crate::kv::KvError;
use crate::lease::{MAX_TTL, MIN_TTL};
use crate::node::Master;
use crate::types::{Command, Outcome};

pub struct LeaseService {
    pub master: Master,
}

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let r = req.into_inner();
        if r.ttl > MAX_TTL {
            return Err(Error::Kv(KvError::LeaseTtlTooLarge).into());
        }
        if r.id < 0 {
            return Err(Error::InvalidArgument(format!(
                "etcdserver: lease ID {} is negative",
                r.id
            ))
            .into());
        }
        let ttl = r.ttl.max(MIN_TTL);
        for _ in 0..8 {
            let id = if r.id != 0 {
                r.id
            } else {
                rand::thread_rng().gen_range(1..i64::MAX)
            };
            let res = self.master.propose(Command::LeaseGrant { id, ttl }).await?;
            match res.outcome {
                Outcome::LeaseGranted(Ok((id, ttl))) => {
                    return Ok(Response::new(pb::LeaseGrantResponse {
                        header: Some(self.master.header(res.revision)),
                        id,
                        ttl,
                        error: String::new(),
                    }))
                }
                Outcome::LeaseGranted(Err(KvError::LeaseExists)) if r.id == 0 => continue,
                Outcome::LeaseGranted(Err(e)) => return Err(Error::Kv(e).into()),
                other => {
                    return Err(Error::Internal(format!("unexpected outcome {other:?}")).into())
                }
            }
        }
        Err(Error::Internal("could not find a free lease id".into()).into())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let id = req.into_inner().id;
        let res = self.master.propose(Command::LeaseRevoke { id }).await?;
        match res.outcome {
            Outcome::Done(Ok(())) => Ok(Response::new(pb::LeaseRevokeResponse {
                header: Some(self.master.header(res.revision)),
            })),
            Outcome::Done(Err(e)) => Err(Error::Kv(e).into()),
            other => Err(Error::Internal(format!("unexpected outcome {other:?}")).into()),
        }
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let m = self.master.clone();
        tokio::spawn(async move {
            while let Some(Ok(r)) = inbound.next().await {
                let resp = match m.lease_keep_alive(r.id).await {
                    Ok(ttl) => Ok(pb::LeaseKeepAliveResponse {
                        header: Some(m.header(m.store.revision())),
                        id: r.id,
                        // etcd answers TTL 0 for a lease that is gone.
                        ttl: ttl.unwrap_or(0),
                    }),
                    Err(e) => Err(Status::from(e)),
                };
                let failed = resp.is_err();
                if tx.send(resp).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        let header = Some(self.master.header(self.master.store.revision()));
        let Some((ttl, granted)) = self.master.lease_time_to_live(r.id).await? else {
            return Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header,
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: vec![],
            }));
        };
        let keys = if r.keys {
            let store = self.master.store.clone();
            blocking(move || store.lease_keys(r.id))
                .await?
                .map_err(Error::from)?
        } else {
            vec![]
        };
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header,
            id: r.id,
            ttl,
            granted_ttl: granted,
            keys,
        }))
    }

    async fn lease_leases(
        &self,
        _req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let store = self.master.store.clone();
        let leases = blocking(move || store.leases())
            .await?
            .map_err(Error::from)?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.master.header(self.master.store.revision())),
            leases: leases
                .into_iter()
                .map(|(id, _)| pb::LeaseStatus { id })
                .collect(),
        }))
    }
}
