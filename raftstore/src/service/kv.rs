//! etcd's KV service.

use flotilla_proto::etcdserverpb as pb;
use tonic::{Request, Response, Status};

use super::blocking;
use crate::convert;
use crate::error::Error;
use crate::kv::{self, RequestOp, ResponseOp, TxnRequest, TxnResponse};
use crate::node::Master;
use crate::types::{Command, Outcome};

pub struct KvService {
    pub master: Master,
}

impl KvService {
    async fn write_txn(&self, txn: TxnRequest) -> Result<(TxnResponse, i64), Status> {
        let r = self.master.propose(Command::Txn(txn)).await?;
        match r.outcome {
            Outcome::Txn(Ok(t)) => Ok((t, r.revision)),
            Outcome::Txn(Err(e)) => Err(Error::Kv(e).into()),
            other => Err(Error::Internal(format!("unexpected outcome {other:?}")).into()),
        }
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let r = convert::range_from_pb(req.into_inner())?;
        self.master
            .cfg
            .limits
            .check_range(&r)
            .map_err(Error::from)?;
        if !r.serializable {
            self.master.linearize().await?;
        }
        let (resp, rev) = self.master.range_now(r).await.map_err(Error::from)?;
        Ok(Response::new(convert::range_to_pb(
            resp,
            self.master.header(rev),
        )))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let p = convert::put_from_pb(req.into_inner());
        self.master.cfg.limits.check_put(&p).map_err(Error::from)?;
        let (t, rev) = self
            .write_txn(TxnRequest::single(RequestOp::Put(p)))
            .await?;
        match t.responses.into_iter().next() {
            Some(ResponseOp::Put(p)) => Ok(Response::new(convert::put_to_pb(
                p,
                self.master.header(rev),
            ))),
            other => Err(Error::Internal(format!("unexpected put response {other:?}")).into()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let d = convert::delete_from_pb(req.into_inner());
        self.master
            .cfg
            .limits
            .check_delete(&d)
            .map_err(Error::from)?;
        let (t, rev) = self
            .write_txn(TxnRequest::single(RequestOp::DeleteRange(d)))
            .await?;
        match t.responses.into_iter().next() {
            Some(ResponseOp::DeleteRange(d)) => Ok(Response::new(convert::delete_to_pb(
                d,
                self.master.header(rev),
            ))),
            other => Err(Error::Internal(format!("unexpected delete response {other:?}")).into()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let t = convert::txn_from_pb(req.into_inner())?;
        let limits = self.master.cfg.limits;
        limits.check_txn(&t).map_err(Error::from)?;
        if kv::txn_size(&t) > limits.max_request_bytes {
            return Err(Error::Kv(kv::KvError::RequestTooLarge).into());
        }
        if t.is_read_only() {
            if !all_serializable(&t) {
                self.master.linearize().await?;
            }
            let store = self.master.store.clone();
            let (resp, rev) = blocking(move || store.read_only_txn(&t))
                .await?
                .map_err(Error::from)?;
            return Ok(Response::new(convert::txn_to_pb(
                resp,
                self.master.header(rev),
            )));
        }
        let (resp, rev) = self.write_txn(t).await?;
        Ok(Response::new(convert::txn_to_pb(
            resp,
            self.master.header(rev),
        )))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let revision = req.into_inner().revision;
        let r = self.master.propose(Command::Compact { revision }).await?;
        match r.outcome {
            Outcome::Done(Ok(())) => Ok(Response::new(pb::CompactionResponse {
                header: Some(self.master.header(r.revision)),
            })),
            Outcome::Done(Err(e)) => Err(Error::Kv(e).into()),
            other => Err(Error::Internal(format!("unexpected outcome {other:?}")).into()),
        }
    }
}

fn all_serializable(t: &TxnRequest) -> bool {
    t.success.iter().chain(t.failure.iter()).all(|op| match op {
        RequestOp::Range(r) => r.serializable,
        RequestOp::Txn(n) => all_serializable(n),
        _ => false,
    }) && t.compare.is_empty()
}
