//! Conversions between the etcd protobuf types and Flotilla's own.

use flotilla_proto::etcdserverpb as pb;
use flotilla_proto::mvccpb;

use crate::error::Error;
use crate::kv::*;

pub fn kv_to_pb(kv: KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn event_to_pb(ev: &Event, with_prev: bool) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match ev.kind {
            EventType::Put => mvccpb::event::EventType::Put as i32,
            EventType::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv_to_pb(ev.kv.clone())),
        prev_kv: if with_prev {
            ev.prev_kv.clone().map(kv_to_pb)
        } else {
            None
        },
    }
}

pub fn range_from_pb(r: pb::RangeRequest) -> Result<RangeRequest, Error> {
    Ok(RangeRequest {
        sort_order: match pb::range_request::SortOrder::try_from(r.sort_order) {
            Ok(pb::range_request::SortOrder::None) => SortOrder::None,
            Ok(pb::range_request::SortOrder::Ascend) => SortOrder::Ascend,
            Ok(pb::range_request::SortOrder::Descend) => SortOrder::Descend,
            Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "range: unknown sort_order {}",
                    r.sort_order
                )))
            }
        },
        sort_target: match pb::range_request::SortTarget::try_from(r.sort_target) {
            Ok(pb::range_request::SortTarget::Key) => SortTarget::Key,
            Ok(pb::range_request::SortTarget::Version) => SortTarget::Version,
            Ok(pb::range_request::SortTarget::Create) => SortTarget::Create,
            Ok(pb::range_request::SortTarget::Mod) => SortTarget::Mod,
            Ok(pb::range_request::SortTarget::Value) => SortTarget::Value,
            Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "range: unknown sort_target {}",
                    r.sort_target
                )))
            }
        },
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn range_to_pb(r: RangeResponse, header: pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(header),
        kvs: r.kvs.into_iter().map(kv_to_pb).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_from_pb(p: pb::PutRequest) -> PutRequest {
    PutRequest {
        key: p.key,
        value: p.value,
        lease: p.lease,
        prev_kv: p.prev_kv,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

pub fn put_to_pb(p: PutResponse, header: pb::ResponseHeader) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(header),
        prev_kv: p.prev_kv.map(kv_to_pb),
    }
}

pub fn delete_from_pb(d: pb::DeleteRangeRequest) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: d.key,
        range_end: d.range_end,
        prev_kv: d.prev_kv,
    }
}

pub fn delete_to_pb(d: DeleteRangeResponse, header: pb::ResponseHeader) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: Some(header),
        deleted: d.deleted,
        prev_kvs: d.prev_kvs.into_iter().map(kv_to_pb).collect(),
    }
}

fn op_from_pb(op: pb::RequestOp) -> Result<RequestOp, Error> {
    use pb::request_op::Request;
    match op.request {
        Some(Request::RequestRange(r)) => Ok(RequestOp::Range(range_from_pb(r)?)),
        Some(Request::RequestPut(p)) => Ok(RequestOp::Put(put_from_pb(p))),
        Some(Request::RequestDeleteRange(d)) => Ok(RequestOp::DeleteRange(delete_from_pb(d))),
        Some(Request::RequestTxn(t)) => Ok(RequestOp::Txn(txn_from_pb(t)?)),
        None => Err(Error::InvalidArgument(
            "txn: a request op has no request".into(),
        )),
    }
}

fn compare_from_pb(c: pb::Compare) -> Result<Compare, Error> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let result = match R::try_from(c.result) {
        Ok(R::Equal) => CompareResult::Equal,
        Ok(R::Greater) => CompareResult::Greater,
        Ok(R::Less) => CompareResult::Less,
        Ok(R::NotEqual) => CompareResult::NotEqual,
        Err(_) => {
            return Err(Error::InvalidArgument(format!(
                "compare: unknown result {}",
                c.result
            )))
        }
    };
    let u = c.target_union;
    let target = match T::try_from(c.target) {
        Ok(T::Version) => CompareTarget::Version(match u {
            Some(U::Version(v)) => v,
            _ => 0,
        }),
        Ok(T::Create) => CompareTarget::Create(match u {
            Some(U::CreateRevision(v)) => v,
            _ => 0,
        }),
        Ok(T::Mod) => CompareTarget::Mod(match u {
            Some(U::ModRevision(v)) => v,
            _ => 0,
        }),
        Ok(T::Value) => CompareTarget::Value(match u {
            Some(U::Value(v)) => v,
            _ => vec![],
        }),
        Ok(T::Lease) => CompareTarget::Lease(match u {
            Some(U::Lease(v)) => v,
            _ => 0,
        }),
        Err(_) => {
            return Err(Error::InvalidArgument(format!(
                "compare: unknown target {}",
                c.target
            )))
        }
    };
    Ok(Compare {
        result,
        target,
        key: c.key,
        range_end: c.range_end,
    })
}

pub fn txn_from_pb(t: pb::TxnRequest) -> Result<TxnRequest, Error> {
    Ok(TxnRequest {
        compare: t
            .compare
            .into_iter()
            .map(compare_from_pb)
            .collect::<Result<_, _>>()?,
        success: t
            .success
            .into_iter()
            .map(op_from_pb)
            .collect::<Result<_, _>>()?,
        failure: t
            .failure
            .into_iter()
            .map(op_from_pb)
            .collect::<Result<_, _>>()?,
    })
}

pub fn txn_to_pb(t: TxnResponse, header: pb::ResponseHeader) -> pb::TxnResponse {
    use pb::response_op::Response;
    let responses = t
        .responses
        .into_iter()
        .map(|r| pb::ResponseOp {
            response: Some(match r {
                ResponseOp::Range(r) => Response::ResponseRange(range_to_pb(r, header)),
                ResponseOp::Put(p) => Response::ResponsePut(put_to_pb(p, header)),
                ResponseOp::DeleteRange(d) => {
                    Response::ResponseDeleteRange(delete_to_pb(d, header))
                }
                ResponseOp::Txn(t) => Response::ResponseTxn(txn_to_pb(t, header)),
            }),
        })
        .collect();
    pb::TxnResponse {
        header: Some(header),
        succeeded: t.succeeded,
        responses,
    }
}
